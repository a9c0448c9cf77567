"""The Prefect UI's run form: schema with bounds and enums; bad payloads rejected.

Most payloads are checked in process (``tune`` flow runs on the session's test
harness); a few go through a served deployment on a real server, where the
API's own schema check or the flow's validation must stop them. Either way the
message names the field and the event store stays untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema

from flows.scheduler_args import SCHEDULER_NAMES, argument_models
from flows.spec import SpecError, load_spec, spec_differences
from flows.tune import tune
from schedulers.validation import ARGUMENTS
from tests.flows.served import DEPLOYMENT, Served, run, start, wait_final

GOOD: dict[str, Any] = {
    "name": "ui",
    "trainable": "noop",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "scheduler": "random",
    "scheduler_args": {"max_t": 1},
    "budget": {"max_trials": 2},
}


def with_spec(**changes: Any) -> dict[str, Any]:
    spec = {**GOOD, **changes}
    return {"spec": {k: v for k, v in spec.items() if v is not _DROP}}


_DROP = object()

#: (payload, text the error must contain: the field, and the rule where useful)
BAD_PAYLOADS: list[tuple[dict[str, Any], str]] = [
    (with_spec(budget={"max_trials": 0}), "spec.budget.max_trials"),
    (with_spec(budget={"max_resource": -1}), "spec.budget.max_resource"),
    (with_spec(budget={"max_trials": 2, "max_epochs": 3}), "spec.budget.max_epochs"),
    (with_spec(max_concurrency=0), "spec.max_concurrency"),
    (with_spec(max_concurrency=100_000), "spec.max_concurrency"),
    (with_spec(scheduler="bayes"), "spec.scheduler"),
    (with_spec(mode="best"), "spec.mode"),
    (with_spec(name="../../etc"), "spec.name"),
    (with_spec(name=_DROP), "spec.name"),
    (with_spec(trainable="os.system"), "spec.trainable"),
    (with_spec(trainable="not-registered"), "trainable is 'not-registered'"),
    (with_spec(metric=""), "spec.metric"),
    (with_spec(space=[]), "spec.space"),
    (with_spec(space={"x": {"type": "float", "low": 2, "high": 1}}), "space.x.low"),
    (with_spec(space={"x": {"type": "gauss"}}), "space.x.type"),
    (with_spec(scheduler_args={"max_t": 1, "bogus": 2}), "scheduler_args.bogus"),
    (with_spec(scheduler_args={"scheduler": "asha", "max_t": 9}), "scheduler_args are for 'asha'"),
    (
        with_spec(scheduler=_DROP, scheduler_args={"scheduler": "asha", "max_t": 9,
                                                   "reduction_factor": 1}),
        "scheduler_args.reduction_factor: reduction_factor is 1, but must be >= 2",
    ),
    (with_spec(scheduler_args={"max_t": 1, "custom_explore_fn": "x"}), "custom_explore_fn"),
    (with_spec(scheduler="hyperband", scheduler_args={"max_t": -1}), "scheduler_args.max_t"),
    (with_spec(scheduler_args={"max_t": 1, "metric": "x"}), "scheduler_args.metric"),
    (with_spec(scheduler="hyperband", budget={}), "budget is empty"),
    (with_spec(seed=-1), "spec.seed"),
    (with_spec(segment_retries=99), "spec.segment_retries"),
    # Storage is never a parameter: not in the spec, not next to it.
    (with_spec(database_url="sqlite:////tmp/x.db"), "spec.database_url"),
    ({**with_spec(), "experiment_suffix": "random"}, "experiment_suffix"),
]


def test_twenty_or_more_bad_payloads() -> None:
    assert len(BAD_PAYLOADS) >= 20


@pytest.mark.parametrize(("payload", "field"), BAD_PAYLOADS)
def test_bad_payload_fails_fast_naming_the_field(
    prefect_harness: None, rungflow_home: Path, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(Exception) as info:
        tune(**payload)
    assert field in str(info.value)
    # Nothing written: the store was never even opened.
    assert not (rungflow_home / "rungflow.db").exists()


def test_unknown_flow_parameter_is_refused() -> None:
    with pytest.raises(Exception, match="database_url"):
        tune.validate_parameters({**with_spec(), "database_url": "sqlite:////tmp/x.db"})


def test_suffix_that_makes_the_name_too_long_fails_before_writing(
    prefect_harness: None, rungflow_home: Path
) -> None:
    payload = with_spec(name="n" * 95)
    with pytest.raises(SpecError, match=r"spec\.name"):
        tune(**payload, experiment_suffix="datetime")
    assert not (rungflow_home / "rungflow.db").exists()


def _spec_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    defs = schema["definitions"]
    return defs["ExperimentSpec"]["properties"], defs["BudgetSpec"]["properties"]


def check_form_schema(schema: dict[str, Any]) -> None:
    """The fields, enums, bounds and descriptions the UI form is built from."""
    assert schema["required"] == ["spec"]
    suffix = schema["properties"]["experiment_suffix"]
    assert suffix["enum"] == ["none", "date", "datetime", "flow_run"]
    assert suffix["default"] == "none"
    spec, budget = _spec_schema(schema)
    # The flat `scheduler` is accepted but not shown: scheduler_args' toggle chooses it.
    assert "scheduler" not in spec
    flat = schema["definitions"]["ExperimentSpec"]["patternProperties"]["^scheduler$"]
    assert set(flat["enum"]) >= {"random", "hyperband", "asha", "pbt", "dyhpo"}
    titles = [branch["title"] for branch in spec["scheduler_args"]["anyOf"]]
    assert titles == list(SCHEDULER_NAMES)
    assert spec["mode"]["enum"] == ["min", "max"]
    assert (spec["max_concurrency"]["minimum"], spec["max_concurrency"]["maximum"]) == (1, 256)
    assert spec["max_concurrency"]["default"] == 2
    assert (spec["seed"]["minimum"], spec["segment_retries"]["maximum"]) == (0, 10)
    # Bounds of optional numbers sit beside their anyOf, so errors name the rule.
    assert budget["max_trials"]["minimum"] == 1
    assert budget["max_resource"]["exclusiveMinimum"] == 0
    assert "noop" in spec["trainable"]["enum"]  # a drop-down of registered trainables
    assert "completion order" in spec["scheduler_args"]["description"]
    assert spec["task_runner"]["enum"] == ["thread", "process", "dask", "ray"]
    for name, most in (("num_cpus", 1024), ("num_gpus", 64)):
        bounds = next(o for o in spec[name]["anyOf"] if o["type"] == "number")
        assert (bounds["minimum"], bounds["maximum"]) == (0, most)
    for name, prop in spec.items():
        assert prop.get("description"), f"{name} has no description"
    assert "pattern" in spec["name"]
    # Storage locations are not form fields.
    text = json.dumps(schema)
    assert "database" not in text
    assert "checkpoints" not in text
    assert "_address" not in text  # cluster addresses are settings


def test_flow_parameter_schema_is_a_proper_form() -> None:
    check_form_schema(parameter_schema(tune).model_dump())


@pytest.mark.parametrize(
    ("budget", "rule"),
    [
        ({"max_trials": -1}, "-1 is less than the minimum of 1"),
        ({"max_resource": 0}, "0 is less than or equal to the minimum of 0"),
    ],
)
def test_api_schema_check_names_the_field_and_the_range(
    budget: dict[str, Any], rule: str
) -> None:
    """What the Prefect API answers a form submission with (its own validate())."""
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    schema = parameter_schema(tune).model_dump()
    with pytest.raises(ValidationError) as info:
        validate(with_spec(budget=budget), schema, raise_on_error=True)
    message = str(info.value)
    assert "spec.budget." + next(iter(budget)) in message and rule in message, message
    assert "any of the given schemas" not in message
    validate(with_spec(budget={"max_trials": None, "max_resource": 5}), schema,
             raise_on_error=True)


# ------------------------------------------------- typed scheduler_args form
#: One valid set of arguments per scheduler (space: x in [0, 1]; 4 trials).
ARGS: dict[str, dict[str, Any]] = {
    "random": {"max_t": 3},
    "fifo": {"max_t": 2, "points_per_dim": 2},
    "hyperband": {"max_t": 9, "reduction_factor": 3},
    "asha": {"max_t": 9, "grace_period": 1, "reduction_factor": 3, "brackets": 2,
             "bracket_weights": "exponential"},
    "pbt": {"perturbation_interval": 2, "population_size": 2, "max_t": 6,
            "quantile_fraction": 0.5, "synch": True},
    "pbt_replay": {"policy": [[0, {"x": 0.5}], [2, {"x": 0.25}]], "max_t": 4},
    "dyhpo": {"max_t": 4, "grace_period": 1, "probability_sh": 0.5, "surrogate": "gp"},
}


def _form_schema() -> dict[str, Any]:
    return parameter_schema(tune).model_dump()


def test_one_variant_per_scheduler_with_the_scheduler_s_own_bounds() -> None:
    """Each branch: the tag, every argument, words; the strict check has the bounds."""
    schema = _form_schema()
    spec = schema["definitions"]["ExperimentSpec"]
    branches = spec["properties"]["scheduler_args"]["anyOf"]
    assert [b["title"] for b in branches] == list(SCHEDULER_NAMES) == list(ARGS)
    link = spec
    for name, branch, model in zip(SCHEDULER_NAMES, branches, argument_models(), strict=True):
        tag = branch["properties"]["scheduler"]
        assert tag["default"] == name  # the UI fills it in
        assert link["then"]["properties"]["scheduler_args"]["properties"]["scheduler"]["enum"] == [
            name
        ]
        assert set(branch["properties"]) == set(model.model_fields)
        for field, prop in branch["properties"].items():
            assert prop["description"], (name, field)
            if field != "scheduler":
                # A default would be copied into every payload (and the stored spec).
                assert "default" not in prop, (name, field)
                words = prop["description"]
                assert "Default:" in words or "Required." in words, (name, field)
        # The API's check: the if/then chain, one strict schema per scheduler.
        assert link["if"]["anyOf"][0]["properties"]["scheduler"]["const"] == name
        strict = link["then"]["properties"]["scheduler_args"]
        assert strict["additionalProperties"] is False
        for field, prop in strict["properties"].items():
            rule = ARGUMENTS.get(field)
            if rule is None or field == "scheduler":
                continue
            if rule.kind in ("number", "int"):  # bounds from the scheduler's own table
                low = "exclusiveMinimum" if rule.low_open else "minimum"
                assert prop[low] == rule.low, (name, field)
                assert prop.get("maximum") == rule.high, (name, field)
            if rule.kind == "choice":
                enum = prop.get("enum") or prop["anyOf"][0]["enum"]
                assert enum == list(rule.choices)
        link = link["else"]
    # The branches only shape the form: an out-of-range value fails the one strict
    # schema that applies, not every branch (which would say "not valid under any").
    assert not any("minimum" in v for v in branches[3]["properties"].values())
    quantile = _strict(spec, "pbt")["properties"]["quantile_fraction"]
    assert (quantile["minimum"], quantile["maximum"]) == (0, 0.5)
    assert _strict(spec, "asha")["properties"]["reduction_factor"]["minimum"] == 2
    assert _strict(spec, "dyhpo")["properties"]["probability_sh"]["maximum"] == 1
    assert _strict(spec, "pbt")["required"] == ["perturbation_interval"]


def _strict(spec: dict[str, Any], name: str) -> dict[str, Any]:
    link = spec
    while link["if"]["anyOf"][0]["properties"]["scheduler"]["const"] != name:
        link = link["else"]
    strict: dict[str, Any] = link["then"]["properties"]["scheduler_args"]
    return strict


def _yaml_spec(name: str, tmp_path: Path) -> Path:
    import yaml

    text = yaml.safe_dump({**GOOD, "name": f"form-{name}", "budget": {"max_trials": 4},
                           "scheduler": name, "scheduler_args": ARGS[name]})
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", list(ARGS))
def test_ui_payload_stores_the_same_spec_as_the_yaml(name: str, tmp_path: Path) -> None:
    """The form's layout (tag inside scheduler_args) and the flat YAML: one stored spec."""
    from prefect.utilities.schema_tools.validation import validate

    from_yaml = load_spec(_yaml_spec(name, tmp_path))
    ui = {"spec": {**GOOD, "name": f"form-{name}", "budget": {"max_trials": 4},
                   "scheduler_args": {"scheduler": name, **ARGS[name]}}}
    ui["spec"].pop("scheduler")
    validate(ui, _form_schema(), raise_on_error=True)  # what the API checks first
    from_ui = tune.validate_parameters(ui)["spec"]  # what the flow run then gets
    assert from_ui.to_json() == from_yaml.to_json()
    assert from_ui.to_json()["scheduler_args"] == ARGS[name]  # exactly what was given
    assert spec_differences(from_yaml.to_json(), from_ui) == []
    # The flat layout passes the API's check too (older deployments, YAML).
    validate({"spec": from_yaml.to_json()}, _form_schema(), raise_on_error=True)


def test_stored_scheduler_args_are_exactly_what_the_spec_gave() -> None:
    """The stored ExperimentCreated spec is unchanged: no defaults added, ints stay ints."""
    import yaml

    for path in sorted(Path("examples").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        stored = load_spec(path).to_json()
        assert stored["scheduler_args"] == raw.get("scheduler_args", {}), path
        assert stored["scheduler"] == raw.get("scheduler", "random"), path
        assert json.dumps(stored["scheduler_args"]) == json.dumps(raw.get("scheduler_args", {}))


#: (scheduler, bad arguments, field, what pydantic says, what the API says)
BAD_ARGS: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("hyperband", {"max_t": -1}, "max_t", "must be > 0", "less than or equal to the minimum of 0"),
    ("asha", {"max_t": 9, "reduction_factor": 1}, "reduction_factor", "must be >= 2",
     "1 is less than the minimum of 2"),
    ("asha", {"max_t": 9, "brackets": 0}, "brackets", "must be an integer >= 1",
     "0 is less than the minimum of 1"),
    ("asha", {"max_t": 9, "variant": "eager"}, "variant", "'promotion' or 'stopping'",
     "is not one of ['promotion', 'stopping']"),
    ("pbt", {"perturbation_interval": 2, "quantile_fraction": 0.7}, "quantile_fraction",
     "must be in [0, 0.5]", "0.7 is greater than the maximum of 0.5"),
    ("pbt", {"perturbation_interval": 2, "resample_probability": 1.5}, "resample_probability",
     "must be in [0, 1]", "1.5 is greater than the maximum of 1"),
    ("pbt", {"perturbation_interval": 2, "max_generations": 0}, "max_generations",
     "must be an integer >= 1 or null", "0 is less than the minimum of 1"),
    ("pbt", {"max_t": 4}, "perturbation_interval", "is required by 'pbt' (a number > 0)",
     "'perturbation_interval' is a required property"),
    ("dyhpo", {"max_t": 4, "probability_sh": 2}, "probability_sh", "must be in [0, 1]",
     "2 is greater than the maximum of 1"),
    ("dyhpo", {"max_t": 4, "rung_increment": 0}, "rung_increment", "must be > 0",
     "0 is less than or equal to the minimum of 0"),
    ("fifo", {"max_t": 2, "points_per_dim": 101}, "points_per_dim",
     "must be an integer in 1..100", "101 is greater than the maximum of 100"),
    # Prefect lets an optional field be null, so a wrong type reads "not valid under any
    # of the given schemas" (the bound checks do not): the path still names the field.
    ("random", {"max_t": True}, "max_t", "must be a number > 0", "True is not valid"),
]


@pytest.mark.parametrize(("name", "args", "field", "says", "api_says"), BAD_ARGS)
@pytest.mark.parametrize("layout", ["flat", "form"])
def test_bad_scheduler_argument_names_the_field_and_the_range(
    name: str, args: dict[str, Any], field: str, says: str, api_says: str, layout: str
) -> None:
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    spec: dict[str, Any] = {**GOOD, "budget": {"max_trials": 4}}
    if layout == "flat":
        spec.update(scheduler=name, scheduler_args=args)
    else:
        spec.pop("scheduler")
        spec["scheduler_args"] = {"scheduler": name, **args}
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert info.value.errors == [(f"scheduler_args.{field}", info.value.errors[0][1])]
    assert says in info.value.errors[0][1], info.value.errors
    assert "\n" not in str(info.value)  # one line: "error: invalid experiment spec: ..."
    with pytest.raises(ValidationError) as api:
        validate({"spec": spec}, _form_schema(), raise_on_error=True)
    message = str(api.value)
    assert f"field 'spec.scheduler_args.{field}'" in message or (
        f"'{field}' is a required property" in message  # reported on scheduler_args
    ), message
    assert api_says in message, message


# ------------------------------------------------------------- real server
@pytest.mark.slow
def test_served_deployment_schema_has_fields_and_bounds(served: Served) -> None:
    async def read(client: Any) -> Any:
        return await client.read_deployment_by_name(DEPLOYMENT)

    deployment = run(read, served.api_url)
    assert deployment.enforce_parameter_schema
    check_form_schema(deployment.parameter_openapi_schema)
    # prefect.yaml's defaults pre-fill the form and are themselves valid.
    tune.validate_parameters(deployment.parameters)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (with_spec(name="ui-bounds", max_concurrency=0), "max_concurrency"),
        (with_spec(name="ui-enum", scheduler="bayes"), "scheduler"),
        (with_spec(name="ui-args", scheduler_args={"max_t": 1, "bogus": 1}), "scheduler_args"),
        # The trainable is a drop-down of the registered ones: an enum the API checks.
        (with_spec(name="ui-trainable", trainable="not-registered"), "spec.trainable"),
        (
            with_spec(name="ui-asha", scheduler=_DROP,
                      scheduler_args={"scheduler": "asha", "max_t": 9, "grace_period": 0}),
            "spec.scheduler_args.grace_period",
        ),
    ],
)
def test_server_rejects_out_of_schema_payloads(
    served: Served, payload: dict[str, Any], field: str
) -> None:
    """The API checks the form's JSON schema before a flow run even exists."""
    with pytest.raises(Exception) as info:
        start(served.api_url, payload)
    assert field in str(info.value)
    assert not served.has_experiment(payload["spec"]["name"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (
            with_spec(name="ui-asha-order", scheduler=_DROP,
                      scheduler_args={"scheduler": "asha", "max_t": 9, "grace_period": 10}),
            "scheduler_args.grace_period",
        ),
        (
            with_spec(name="ui-space", space={"x": {"type": "float", "low": 2, "high": 1}}),
            "space.x.low",
        ),
    ],
)
def test_flow_run_with_invalid_spec_fails_naming_the_field(
    served: Served, payload: dict[str, Any], field: str
) -> None:
    """Rules the JSON schema cannot express fail the flow run before any write."""
    flow_run = wait_final(served.api_url, start(served.api_url, payload))
    assert flow_run.state.is_failed(), flow_run.state
    assert field in (flow_run.state.message or "")
    assert not served.has_experiment(payload["spec"]["name"])
