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

from flows.spec import SpecError
from flows.tune import tune
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
    assert set(spec["scheduler"]["enum"]) >= {"random", "hyperband", "asha", "pbt", "dyhpo"}
    assert spec["mode"]["enum"] == ["min", "max"]
    assert (spec["max_concurrency"]["minimum"], spec["max_concurrency"]["maximum"]) == (1, 256)
    assert spec["max_concurrency"]["default"] == 2
    assert (spec["seed"]["minimum"], spec["segment_retries"]["maximum"]) == (0, 10)
    # Bounds of optional numbers sit beside their anyOf, so errors name the rule.
    assert budget["max_trials"]["minimum"] == 1
    assert budget["max_resource"]["exclusiveMinimum"] == 0
    assert "noop" in spec["trainable"]["enum"]  # a drop-down of registered trainables
    assert "hyperband: max_t, reduction_factor" in spec["scheduler_args"]["description"]
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
        (with_spec(name="ui-trainable", trainable="not-registered"), "spec.trainable"),
        (with_spec(name="ui-args", scheduler_args={"max_t": 1, "bogus": 1}), "scheduler_args"),
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
