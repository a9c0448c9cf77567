"""Lineage and policy from the log, PBTReplay, the pbt-policy command, kill and resume."""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from examples.pbt_toy import TOY_SPACE, make_pbt
from examples.pbt_toy import objective as toy_objective
from flows.cli.pbt import register
from schedulers import (
    CheckpointRef,
    Done,
    Event,
    ExperimentFinished,
    RunSegment,
    SchedulerArgumentError,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
    Wait,
    action_events,
    create_scheduler,
)
from schedulers.base import Scheduler
from schedulers.events import segment_key
from schedulers.pbt import PopulationBasedTraining
from schedulers.pbt_replay import PBTReplay, pbt_lineage, pbt_policy
from schedulers.simulate import simulate
from tests.schedulers.conftest import SPACE, objective


def ref(trial: str, resource: float) -> CheckpointRef:
    return CheckpointRef(f"e/{trial}/{resource:g}", 1, "x", trial, resource)


def fin(trial: str, start: float, stop: float) -> SegmentFinished:
    return SegmentFinished(trial, start, stop, (), {"loss": 1.0}, ref(trial, stop))


# A hand-written log: b copies a at 4, then a copies b at 8, then c copies a at 8.
A0, B0, C0 = {"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}
LOG: list[Event] = [
    TrialCreated("a", A0), TrialCreated("b", B0), TrialCreated("c", C0),
    fin("a", 0, 4), fin("b", 0, 4), fin("c", 0, 4),
    TrialPerturbed("b", "a", 4, B0, {"lr": 0.12}, ref("a", 4)),
    fin("a", 4, 8), fin("b", 4, 8),
    TrialPerturbed("a", "b", 8, A0, {"lr": 0.144}, ref("b", 8)),
    TrialPerturbed("c", "a", 8, C0, {"lr": 0.17}, ref("a", 8)),
]


def test_lineage_lists_every_exploit_in_order() -> None:
    lineage = pbt_lineage(LOG)
    assert lineage["c"] == [
        {"donor": "a", "donor_resource": 8.0, "resource": 4.0, "old_config": C0,
         "new_config": {"lr": 0.17}}
    ]
    assert [row["donor"] for row in lineage["a"]] == ["b"]
    assert lineage["b"][0]["resource"] == 4.0
    assert json.loads(json.dumps(lineage)) == lineage  # JSON as is


def test_policy_follows_donors_back_as_of_the_exploit() -> None:
    # c copied a at 8 *after* a had copied b at 8, so c's weights are b's
    # (a at 0..4, then lr 0.12 to 8), then a's new config, then c's.
    assert pbt_policy(LOG, "c") == [(0.0, A0), (4.0, {"lr": 0.12}), (8.0, {"lr": 0.17})]
    assert pbt_policy(LOG, "b") == [(0.0, A0), (4.0, {"lr": 0.12})]
    assert pbt_policy(LOG, "a") == [(0.0, A0), (4.0, {"lr": 0.12}), (8.0, {"lr": 0.144})]
    with pytest.raises(KeyError):
        pbt_policy(LOG, "zz")


# -------------------------------------------------------------------- replay
def replay(**kwargs: Any) -> PBTReplay:
    args: dict[str, Any] = {"space": SPACE, "metric": "loss", "max_t": 9,
                            "policy": [[0, CONF[0]], [3, CONF[1]], [6, CONF[2]]]}
    args.update(kwargs)
    return PBTReplay(**args)


CONF = [{"lr": lr, "width": 16, "act": "relu"} for lr in (0.1, 0.01, 0.001)]


def test_replay_switches_config_at_each_recorded_resource() -> None:
    result = simulate(replay(), objective)
    starts = [e for e in result.events if isinstance(e, SegmentStarted)]
    assert [(e.start, e.stop, e.config["lr"]) for e in starts] == [
        (0, 3, 0.1), (3, 6, 0.01), (6, 9, 0.001)
    ]
    assert [e.restore_from is None for e in starts] == [True, False, False]
    assert all(e.restore_from is None or e.restore_from.trial_id == "t0000" for e in starts)
    assert isinstance(result.done, Done) and result.done.best_trial_id == "t0000"


def test_replay_is_registered_and_replayable() -> None:
    result = simulate(create_scheduler("pbt_replay", space=SPACE, metric="loss", max_t=9,
                                       policy=[[0, CONF[0]], [5, CONF[1]]]), objective)
    for point in result.decision_points:
        fresh = replay(policy=[[0, CONF[0]], [5, CONF[1]]])
        for e in result.events[:point]:
            fresh.tell(e)
        expected = action_events(fresh.ask(1)[0])
        assert expected == result.events[point : point + len(expected)]


def test_replay_retries_a_non_final_failure_and_ends_on_a_final_one() -> None:
    s = replay()
    [a] = s.ask(1)
    for e in action_events(a):
        s.tell(e)
    s.tell(SegmentFailed("t0000", 0, 3, "flaky", final=False))
    [retry] = s.ask(1)
    assert isinstance(retry, RunSegment) and (retry.start, retry.stop) == (0, 3)
    for e in action_events(retry):
        s.tell(e)
    assert s.ask(1) == [Wait()]
    s.tell(SegmentFailed("t0000", 0, 3, "dead"))
    assert isinstance(s.ask(1)[0], Done)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": []}, "non-empty list"),
        ({"policy": [[1, CONF[0]]]}, "policy[0] resource is 1, but must be 0"),
        ({"policy": [[0, CONF[0]], [5, CONF[1]], [4, CONF[2]]]}, "must be >= the previous"),
        ({"policy": [[0, CONF[0]], [9, CONF[1]]]}, "max_t is 9"),
        ({"policy": [[0, {"lr": 5.0, "width": 16, "act": "relu"}]]}, "does not fit"),
        ({"policy": [[0, CONF[0], 3]]}, "pair"),
        ({"max_t": 0}, "max_t is 0"),
    ],
)
def test_replay_argument_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SchedulerArgumentError) as info:
        replay(**kwargs)
    assert message in str(info.value)


# ------------------------------------------------------------------------ CLI
def cli(events: list[Event]) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    def load(experiment: str, db: str | None) -> list[Event]:
        if experiment != "toy":
            raise LookupError(f"experiment {experiment!r} does not exist")
        return events

    register(app, load)
    return app


def test_pbt_policy_command_prints_lineage_table_and_json() -> None:
    events = simulate(make_pbt(seed=0), toy_objective, max_concurrency=2).events
    app, runner = cli(events), CliRunner()
    table = runner.invoke(app, ["pbt-policy", "toy"])
    assert table.exit_code == 0, table.output
    assert "PBT lineage of toy" in table.output and "exploits over 2 trials" in table.output
    as_json = runner.invoke(app, ["pbt-policy", "toy", "--json"])
    assert json.loads(as_json.stdout) == pbt_lineage(events)
    policy = runner.invoke(app, ["pbt-policy", "toy", "--trial", "t0001", "--json"])
    pairs = json.loads(policy.stdout)
    assert [(r, c) for r, c in pairs] == pbt_policy(events, "t0001")
    create_scheduler("pbt_replay", space=TOY_SPACE, metric="Q", mode="max", policy=pairs,
                     max_t=200)  # the JSON is a valid replay policy
    missing = runner.invoke(app, ["pbt-policy", "nope"])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    assert runner.invoke(app, ["pbt-policy", "toy", "--trial", "t9"]).exit_code == 1


# ----------------------------------------------------------- kill and resume
@dataclass
class Run:
    """What survives a kill: the event log (with start times) and the checkpoints."""

    events: list[Event] = field(default_factory=list)
    started_at: dict[tuple[str, float, float], float] = field(default_factory=dict)
    blobs: dict[str, Any] = field(default_factory=dict)
    batches: list[int] = field(default_factory=list)  # log lengths after each append
    now: float = 0.0  # simulated time of the last append (the events' created_at)


def duration(trial_id: str, start: float, stop: float) -> float:
    return (stop - start) * (1.0 + 0.37 * (int(trial_id[1:]) % 4))


def drive(scheduler: Scheduler, *, prior: Run | None = None, kill_at: int | None = None,
          workers: int = 3) -> Run:
    """The flow's loop with simulated time; resumes from ``prior`` like the flow does.

    On resume the log is replayed into the fresh scheduler and segments started
    but not finished are run again, finishing when they would have (the clock
    is stopped while the process is down).
    """
    run = Run() if prior is None else Run(list(prior.events), dict(prior.started_at),
                                          dict(prior.blobs), list(prior.batches), prior.now)
    heap: list[tuple[float, str, float, RunSegment]] = []
    now = run.now
    for event in run.events:
        scheduler.tell(event)
    last_start: dict[str, SegmentStarted] = {}
    for event in run.events:
        if isinstance(event, SegmentStarted):
            last_start[event.trial_id] = event
    # Orphans: the last start of a trial still running (a member that copied a
    # donor behind it may have started the same range before).
    for event in last_start.values():
        t = scheduler.trials[event.trial_id]
        if t.running == (event.start, event.stop):
            t0 = run.started_at[(event.trial_id, event.start, event.stop)]
            action = RunSegment(event.trial_id, event.config, event.start, event.stop,
                                event.restore_from)
            heapq.heappush(heap, (t0 + duration(event.trial_id, event.start, event.stop),
                                  event.trial_id, event.start, action))

    def append(events: list[Event]) -> bool:
        for e in events:
            run.events.append(e)
            scheduler.tell(e)
        run.batches.append(len(run.events))
        run.now = now
        return kill_at is not None and len(run.events) >= kill_at

    while True:
        while len(heap) < workers:
            action = scheduler.ask(1)[0]
            if isinstance(action, Wait):
                break
            if isinstance(action, RunSegment):
                run.started_at[(action.trial_id, action.start, action.stop)] = now
            if append(action_events(action)) or isinstance(action, Done):
                return run
            if isinstance(action, RunSegment):
                heapq.heappush(heap, (now + duration(action.trial_id, action.start, action.stop),
                                      action.trial_id, action.start, action))
        assert heap, "scheduler waits with nothing running"
        now, _, _, action = heapq.heappop(heap)
        state = None if action.restore_from is None else run.blobs[action.restore_from.key]
        reports, new_state = toy_objective(action.config, action.start, action.stop, state)
        key = f"sim/{action.trial_id}/{segment_key(action.start, action.stop)}"
        run.blobs[key] = new_state
        ckpt = CheckpointRef(key, 0, "", action.trial_id, float(action.stop))
        done = SegmentFinished(action.trial_id, action.start, action.stop, tuple(reports),
                               reports[-1], ckpt)
        if append([done]):
            return run


def toy(synch: bool) -> PopulationBasedTraining:
    return make_pbt(seed=11, synch=synch, population_size=4, max_generations=12,
                    initial_configs=None)


@pytest.mark.parametrize("synch", [False, True])
def test_kill_mid_generation_and_resume_gives_the_same_lineage(synch: bool) -> None:
    full = drive(toy(synch))
    assert isinstance(full.events[-1], ExperimentFinished)
    lineage = pbt_lineage(full.events)
    assert any(lineage.values())
    mid_generation = 0
    for cut in full.batches[len(full.batches) // 5 :: 9]:
        killed = drive(toy(synch), kill_at=cut)
        assert killed.events == full.events[:cut]
        probe = toy(synch)
        for e in killed.events:
            probe.tell(e)
        live = [t.resource for t in probe.trials.values() if t.status in ("running", "paused")]
        mid_generation += len(set(live)) > 1
        resumed = drive(toy(synch), prior=killed)
        assert resumed.events == full.events, f"cut at {cut}"
        assert pbt_lineage(resumed.events) == lineage
    assert mid_generation  # some cuts fell between members' boundaries
