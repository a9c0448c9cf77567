"""deployments/prefect.yaml and deployments/serve.py, checked for real.

``prefect deploy`` runs against the session's real server; the per-run naming
rule runs through the served deployment (a scheduled run and its retry).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.tune import tune
from tests.flows.served import DEPLOYMENT, REPO, Served, retry_like_the_ui, run, wait_final

sys.path.insert(0, str(REPO / "deployments"))
import serve as serve_script  # deployments/ holds scripts, not a package

CONFIGS = serve_script.load_deployment_configs()
BY_NAME = {c["name"]: c for c in CONFIGS}


def test_prefect_yaml_has_a_manual_and_a_scheduled_tune_deployment() -> None:
    assert len(CONFIGS) >= 2
    assert {c["entrypoint"] for c in CONFIGS} == {"flows/tune.py:tune"}
    assert not BY_NAME["manual"].get("schedules")
    assert BY_NAME["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    assert BY_NAME["nightly"]["parameters"]["experiment_suffix"] == "date"
    assert BY_NAME["hourly-resume"]["parameters"]["experiment_suffix"] == "none"


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_default_parameters_are_valid_and_hold_no_storage(name: str) -> None:
    params = BY_NAME[name]["parameters"]
    tune.validate_parameters(params)
    text = repr(params).lower()
    assert "sqlite" not in text and "postgres" not in text and "checkpoint" not in text


def test_serve_builds_one_runner_deployment_per_entry() -> None:
    deployments = serve_script.build_deployments()
    assert [d.name for d in deployments] == [c["name"] for c in CONFIGS]
    nightly = next(d for d in deployments if d.name == "nightly")
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    manual = next(d for d in deployments if d.name == "manual")
    assert not manual.schedules
    assert manual.parameters == BY_NAME["manual"]["parameters"]
    assert manual.entrypoint == "flows/tune.py:tune"
    assert not serve_script.build_deployments(["manual"], schedules=False)[0].schedules
    # Like `prefect deploy`: `active: false` in prefect.yaml is registered paused.
    hourly = next(d for d in deployments if d.name == "hourly-resume")
    assert [(s.schedule.cron, s.active) for s in hourly.schedules] == [("0 * * * *", False)]
    assert nightly.schedules[0].active


def test_no_schedules_registers_every_schedule_paused() -> None:
    deployments = serve_script.build_deployments(schedules=False)
    schedules = [s for d in deployments for s in d.schedules]
    assert {s.schedule.cron for s in schedules} == {"0 2 * * *", "0 * * * *"}
    assert not any(s.active for s in schedules)


def test_serve_refuses_unknown_names() -> None:
    with pytest.raises(SystemExit, match="nope"):
        serve_script.build_deployments(["nope"])


@pytest.mark.slow
def test_prefect_deploy_registers_every_deployment(prefect_api_url: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    # PWD as a shell in the repository root sets it: prefect.yaml's pull step uses it.
    env.update(
        PREFECT_API_URL=prefect_api_url, PREFECT_HOME=str(tmp_path / "prefect"), PWD=str(REPO)
    )
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]

    def call(*args: str) -> None:
        done = subprocess.run(
            [*prefect, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    call("work-pool", "create", "rungflow-pool", "--type", "process", "--overwrite")
    call("deploy", "--all", "--prefect-file", "deployments/prefect.yaml")

    async def read(client: Any) -> list[Any]:
        return [await client.read_deployment_by_name(f"tune/{c['name']}") for c in CONFIGS]

    deployments = run(read, prefect_api_url)
    by_name = {d.name: d for d in deployments}
    assert by_name["nightly"].schedules[0].schedule.cron == "0 2 * * *"
    assert by_name["nightly"].schedules[0].active
    assert not by_name["hourly-resume"].schedules[0].active  # registered, paused
    assert not by_name["manual"].schedules
    assert by_name["manual"].parameters == BY_NAME["manual"]["parameters"]
    assert by_name["manual"].work_pool_name == "rungflow-pool"
    assert by_name["manual"].entrypoint == "flows/tune.py:tune"
    assert by_name["manual"].pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]
    assert "sqlite" not in repr([d.parameters for d in deployments])
    assert {"spec", "experiment_suffix"} <= set(
        by_name["manual"].parameter_openapi_schema["properties"]
    )


@pytest.mark.slow
def test_date_suffix_names_the_experiment_and_a_retry_resumes_it(served: Served) -> None:
    from prefect.states import Scheduled

    when = datetime.now(UTC) - timedelta(seconds=1)
    spec = {
        "name": "nightly-like",
        "trainable": "faults",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "scheduler": "random",
        "scheduler_args": {"max_t": 1},
        "budget": {"max_trials": 3},
    }

    async def create(client: Any) -> Any:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        flow_run = await client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"spec": spec, "experiment_suffix": "date"},
            state=Scheduled(scheduled_time=when),
        )
        return flow_run.id

    run_id = run(create, served.api_url)
    first = wait_final(served.api_url, run_id)
    assert first.state.is_completed(), first.state
    name = f"nightly-like-{first.expected_start_time.astimezone(UTC):%Y%m%d}"
    assert served.has_experiment(name)
    events = served.events(name)

    retry_like_the_ui(served.api_url, run_id)  # e.g. the next morning
    second = wait_final(served.api_url, run_id)
    assert second.state.is_completed(), second.state
    assert served.events(name) == events  # resumed a finished experiment: nothing new
    store = served.store()
    try:
        names = [e.name for e in store.list_experiments() if e.name.startswith("nightly-like")]
    finally:
        store.close()
    assert names == [name]
