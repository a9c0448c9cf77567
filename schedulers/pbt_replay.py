"""PBT lineage, policy and replay, all read from the event log.

* :func:`pbt_lineage` lists, per trial, every exploit it made (Ray's
  ``pbt_global.txt`` rows: donor, donor resource, own resource, old and new
  config).
* :func:`pbt_policy` turns one trial's history into the schedule its final
  weights were trained with: ``[(resource, config), ...]``, following donors
  back to the initial configuration (Ray's ``pbt_policy_<trial>.txt``).
* :class:`PBTReplay` re-trains a single trial along such a schedule (Ray's
  ``PBTReplay``): it keeps its own checkpoint and only switches config at each
  recorded resource.

Everything here is a pure function of events, so the same log always gives the
same lineage and the same policy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from schedulers.actions import Action, Done, RunSegment, Wait
from schedulers.base import Scheduler, SchedulerArgumentError
from schedulers.events import (
    Event,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
)
from schedulers.outcomes import ENDED
from schedulers.validation import check_max_t

__all__ = ["PBTReplay", "pbt_lineage", "pbt_policy"]


def pbt_lineage(events: Iterable[Event]) -> dict[str, list[dict[str, Any]]]:
    """Every exploit of every trial, in log order.

    Returns:
        ``{trial_id: [{"donor", "donor_resource", "resource", "old_config",
        "new_config"}, ...]}`` where ``resource`` is what the trial itself had
        reached when it took the donor's weights. Trials that never exploited map
        to an empty list.
    """
    lineage: dict[str, list[dict[str, Any]]] = {}
    reached: dict[str, float] = {}
    for event in events:
        if isinstance(event, TrialCreated):
            lineage.setdefault(event.trial_id, [])
            reached[event.trial_id] = 0.0
        elif isinstance(event, SegmentFinished):
            reached[event.trial_id] = float(event.stop)
        elif isinstance(event, TrialPerturbed):
            lineage.setdefault(event.trial_id, []).append(
                {
                    "donor": event.donor_id,
                    "donor_resource": float(event.donor_resource),
                    "resource": reached.get(event.trial_id, 0.0),
                    "old_config": dict(event.old_config),
                    "new_config": dict(event.new_config),
                }
            )
            reached[event.trial_id] = float(event.donor_resource)
    return lineage


def pbt_policy(events: Iterable[Event], trial_id: str) -> list[tuple[float, dict[str, Any]]]:
    """The config schedule that produced ``trial_id``'s latest weights.

    Starting from the trial's last exploit, the weights it copied were the
    donor's at that moment, so the schedule before ``donor_resource`` is the
    donor's own schedule *as of that event*, found the same way. The result
    starts at resource 0 with the root ancestor's initial config; each further
    entry switches to a new config at a resource.

    Raises:
        KeyError: if ``trial_id`` was never created in ``events``.
    """
    log = list(events)
    created: dict[str, dict[str, Any]] = {}
    perturbed: dict[str, list[tuple[int, TrialPerturbed]]] = {}
    for i, event in enumerate(log):
        if isinstance(event, TrialCreated):
            created[event.trial_id] = dict(event.config)
        elif isinstance(event, TrialPerturbed):
            perturbed.setdefault(event.trial_id, []).append((i, event))
    if trial_id not in created:
        raise KeyError(f"trial {trial_id!r} is not in the log")

    tail: list[tuple[float, dict[str, Any]]] = []
    current, before = trial_id, len(log)
    # Walk back through donors; each step strictly moves earlier in the log,
    # so the loop ends even if trials exploited each other back and forth.
    while True:
        earlier = [(i, p) for i, p in perturbed.get(current, []) if i < before]
        if not earlier:
            tail.append((0.0, created[current]))
            break
        i, p = earlier[-1]
        tail.append((float(p.donor_resource), dict(p.new_config)))
        current, before = p.donor_id, i
    policy: list[tuple[float, dict[str, Any]]] = []
    for resource, config in reversed(tail):
        if policy and policy[-1][0] == resource:
            policy[-1] = (resource, config)  # same resource: the later switch wins
        else:
            policy.append((resource, config))
    return policy


def _check_policy(policy: Any) -> list[tuple[float, dict[str, Any]]]:
    if not isinstance(policy, Sequence) or isinstance(policy, (str, bytes)) or not policy:
        raise SchedulerArgumentError(
            "policy", f"policy is {policy!r}, but must be a non-empty list of [resource, config]"
        )
    out: list[tuple[float, dict[str, Any]]] = []
    for i, entry in enumerate(policy):
        if (
            not isinstance(entry, Sequence)
            or isinstance(entry, (str, bytes))
            or len(entry) != 2
            or isinstance(entry[0], bool)
            or not isinstance(entry[0], (int, float))
            or not isinstance(entry[1], Mapping)
        ):
            raise SchedulerArgumentError(
                "policy", f"policy[{i}] is {entry!r}, but must be a pair [resource, config]"
            )
        resource = float(entry[0])
        if not math.isfinite(resource) or resource < 0:
            raise SchedulerArgumentError(
                "policy", f"policy[{i}] resource is {entry[0]!r}, but must be a number >= 0"
            )
        if out and resource < out[-1][0]:
            raise SchedulerArgumentError(
                "policy",
                f"policy[{i}] resource is {resource:g}, but must be >= the previous "
                f"({out[-1][0]:g}); the schedule is in resource order",
            )
        out.append((resource, dict(entry[1])))
    if out[0][0] != 0:
        raise SchedulerArgumentError(
            "policy", f"policy[0] resource is {out[0][0]:g}, but must be 0 (the initial config)"
        )
    return out


class PBTReplay(Scheduler):
    """Re-train one trial along a recorded PBT schedule (Ray's ``PBTReplay``).

    The trial starts from scratch with the first config and trains segment by
    segment, each segment restoring its *own* previous checkpoint; at every
    recorded resource the config switches. Unlike the original run no weights
    are copied: this is how PBT's discovered schedule is reused to train a
    single model (Jaderberg et al., section 4.1; Ray's PBTReplay docs).

    Args:
        policy: ``[[resource, config], ...]`` as printed by ``rungflow
            pbt-policy EXPERIMENT --trial ID --json`` or returned by
            :func:`pbt_policy`; resources ascending, the first one 0. JSON-able.
        max_t: Resource to train to; every switch must happen before it.
        **kwargs: ``space, metric, mode, seed, budget`` as for every scheduler.

    Example:
        >>> from schedulers import SearchSpace
        >>> space = SearchSpace.parse({"lr": {"type": "float", "low": 0.001, "high": 1}})
        >>> s = PBTReplay(space=space, metric="loss", policy=[[0, {"lr": 0.1}],
        ...     [4, {"lr": 0.05}]], max_t=10)
        >>> a = s.ask(1)[0]
        >>> (a.start, a.stop, dict(a.config))
        (0.0, 4.0, {'lr': 0.1})
    """

    name = "pbt_replay"

    def __init__(self, *, policy: Any, max_t: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_t = float(check_max_t(max_t))
        self.policy = _check_policy(policy)
        for i, (resource, config) in enumerate(self.policy):
            if i and resource >= self.max_t:
                raise SchedulerArgumentError(
                    "policy",
                    f"policy[{i}] switches at resource {resource:g}, but max_t is "
                    f"{self.max_t:g}; that config would never train",
                )
            if not self.space.contains(config):
                raise SchedulerArgumentError(
                    "policy", f"policy[{i}] config {config!r} does not fit the search space"
                )
        # Keep the last config per resource and drop zero-length pieces.
        points: dict[float, dict[str, Any]] = {}
        for resource, config in self.policy:
            points[resource] = config
        self._switches = sorted(points.items())
        self.trial_id = "t0000"
        self._retry: SegmentStarted | None = None
        self._last_started: SegmentStarted | None = None

    def on_event(self, event: Event) -> None:
        if isinstance(event, SegmentStarted):
            self._last_started = event
            self._retry = None
        elif isinstance(event, SegmentFailed) and not event.final:
            self._retry = self._last_started

    def _config_at(self, resource: float) -> tuple[dict[str, Any], float]:
        """Config in force from ``resource`` and the resource of the next switch."""
        config, stop = self._switches[0][1], self.max_t
        for r, c in self._switches:
            if r <= resource:
                config = c
            else:
                stop = r
                break
        return config, stop

    def ask(self, n: int = 1) -> list[Action]:
        trial = self.trials.get(self.trial_id)
        if self.finished or (trial is not None and trial.status in ENDED):
            return [Done("replay finished", self.trial_id if trial else None)]
        if trial is not None and trial.running is not None:
            return [Wait()]
        if self._retry is not None:
            r = self._retry
            return [RunSegment(self.trial_id, dict(r.config), r.start, r.stop, r.restore_from,
                               info={"replay": "retry"})]
        resource = 0.0 if trial is None else trial.resource
        if resource >= self.max_t:
            return [Done("replay reached max_t", self.trial_id)]
        config, stop = self._config_at(resource)
        if not self.can_spend(stop - resource):
            return [Done("budget exhausted", self.trial_id)]
        return [
            RunSegment(
                self.trial_id,
                dict(config),
                resource,
                stop,
                restore_from=None if trial is None else trial.checkpoint,
                new_trial=trial is None,
                info={"replay": "policy"},
            )
        ]

    def status_extras(self) -> dict[str, Any]:
        return {"policy_switches": [r for r, _ in self._switches], "max_t": self.max_t}
