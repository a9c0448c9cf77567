"""Search quality at equal total resource, with a rank test between methods.

Problems (all ``R = max_t = 81`` epochs, one report per epoch):

* ``crossing``: ``examples/synthetic.py``; learning curves cross, so early
  rungs mislead about which learning rate ends best.
* ``hartmann-informative`` / ``hartmann-misleading``: the multi-fidelity
  Hartmann 6-D function of :mod:`benchmarks.mf_hartmann` with
  fidelity-dependent bias and noise; low fidelities rank configurations
  somewhat / mislead.

Methods, each given the same ``Budget(max_resource=budget)`` and run by the
in-memory simulator (:func:`schedulers.simulate.simulate`, no Prefect) with
the same number of asynchronous workers: rungflow's HyperBand (+TPE, i.e.
BOHB, and +random), ASHA + random (promotion and stopping variants), DyHPO
with its defaults, full-fidelity random search, and -- as a benchmark-only
peer -- Optuna's ``RandomSampler`` + ``SuccessiveHalvingPruner`` (min_resource
1, reduction_factor 3), driven through Optuna's ask/tell interface with the
same simulated workers and the same resource budget (one unit per epoch).

Regret: the true (noise-free, full-fidelity) loss of the configuration each
method returns (highest resource reached first, then best value: rungflow's
``best_trial`` rule, applied to Optuna's trials too), minus the optimum.
Prints median and IQR over seeds, and two-sided Mann-Whitney U p-values of
every method against the best (lowest median) method of the problem, plus the
acceptance pairs of issue 16 one-sided. Saves everything as JSON.

Run: ``python benchmarks/search_quality.py [--seeds 20] [--budget-trainings 30]
[--problems ...] [--methods ...] [--workers 4]``. DyHPO settings other than
the defaults are methods too (``--methods dyhpo-geo-sh50 ...``, see
:data:`DYHPO_VARIANTS`; ``--dyhpo dyhpo-NAME='{"probability_sh": 0.5}'`` adds
one). Seeds are the outer loop and the raw outcomes are saved after every
seed; ``python benchmarks/search_quality.py --summarise FILE`` prints the
tables of a run that was cut short.
"""

from __future__ import annotations

import os
import sys

# Run as a script (``python benchmarks/search_quality.py``) the repository root
# is not on the path, and benchmarks.mf_hartmann must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import heapq  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from scipy.stats import mannwhitneyu  # noqa: E402

from benchmarks.mf_hartmann import PRESETS  # noqa: E402
from benchmarks.mf_hartmann import SPACE as HARTMANN_SPACE  # noqa: E402
from examples import synthetic  # noqa: E402
from schedulers import Budget, RandomScheduler, SearchSpace  # noqa: E402
from schedulers.asha import ASHAScheduler  # noqa: E402
from schedulers.base import Scheduler  # noqa: E402
from schedulers.hyperband import HyperBandScheduler  # noqa: E402
from schedulers.simulate import Objective, simulate  # noqa: E402

OUT = pathlib.Path(__file__).parent / "out"


@dataclass(frozen=True)
class Problem:
    """A benchmark problem: objective, space, R and the regret of a config."""

    name: str
    space: SearchSpace
    max_t: int
    objective: Objective
    regret: Callable[[Mapping[str, Any]], float]


PROBLEMS: dict[str, Problem] = {
    "crossing": Problem(
        "crossing", synthetic.SPACE, synthetic.MAX_T, synthetic.objective, synthetic.regret
    ),
    **{
        name: Problem(name, HARTMANN_SPACE, p.max_t, p.objective, p.regret)
        for name, p in PRESETS.items()
    },
}


@dataclass
class Outcome:
    regret: float
    resource: float
    trials: int
    seconds: float


Method = Callable[[Problem, int, float, int], Outcome]


def _common(problem: Problem, seed: int, budget: float) -> dict[str, Any]:
    return {
        "space": problem.space, "metric": "loss", "mode": "min", "seed": seed,
        "budget": Budget(max_resource=budget),
    }


def _rungflow(make: Callable[[Problem, dict[str, Any]], Scheduler]) -> Method:
    def run(problem: Problem, seed: int, budget: float, workers: int) -> Outcome:
        start = time.process_time()
        scheduler = make(problem, _common(problem, seed, budget))
        result = simulate(scheduler, problem.objective, max_concurrency=workers, seed=seed)
        assert result.done is not None and result.done.best_trial_id is not None
        best = scheduler.trials[result.done.best_trial_id]
        return Outcome(
            problem.regret(best.config), result.resource_used, len(scheduler.trials),
            time.process_time() - start,
        )

    return run


def _asha(searcher: str, variant: str = "promotion", **extra: Any) -> Method:
    return _rungflow(
        lambda p, kw: ASHAScheduler(
            **kw, max_t=p.max_t, grace_period=1, reduction_factor=3, searcher=searcher,
            variant=variant, **extra,
        )
    )


def _hyperband(searcher: str) -> Method:
    return _rungflow(
        lambda p, kw: HyperBandScheduler(**kw, max_t=p.max_t, reduction_factor=3,
                                         searcher=searcher)
    )


def _dyhpo(**extra: Any) -> Method:
    def make(p: Problem, kw: dict[str, Any]) -> Scheduler:
        from schedulers.dyhpo import DyHPOScheduler

        return DyHPOScheduler(**kw, max_t=p.max_t, **extra)

    return _rungflow(make)


def _random(p: Problem, kw: dict[str, Any]) -> Scheduler:
    return RandomScheduler(**kw, max_t=p.max_t)


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    """``suggest_*`` for an optuna distribution (the public API)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)


def optuna_random_sh(problem: Problem, seed: int, budget: float, workers: int) -> Outcome:
    """Optuna's RandomSampler + SuccessiveHalvingPruner under the same simulated workers.

    Each worker trains one trial epoch by epoch (Optuna's model: report, then
    ``should_prune``; a pruned trial is never resumed), with the same
    lognormal jitter per unit of resource as the simulator. An epoch is
    started only while the budget has room for it, so the resource spent is
    the same as rungflow's.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start_cpu = time.process_time()
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    jitter = np.random.default_rng(seed)
    heap: list[tuple[float, int, Any]] = []
    spent = 0
    counter = 0
    last: dict[int, tuple[float, float, dict[str, Any]]] = {}  # number -> (resource, value, cfg)

    def schedule(now: float, trial: Any, config: dict[str, Any], epoch: int, state: Any) -> bool:
        nonlocal spent, counter
        if spent + 1 > budget:
            return False
        spent += 1
        counter += 1
        d = float(jitter.lognormal(0.0, 0.3))
        heapq.heappush(heap, (now + d, counter, (trial, config, epoch, state)))
        return True

    def start_trial(now: float) -> None:
        if spent + 1 > budget:
            return
        trial = study.ask()
        config = {name: _suggest(trial, name, dist) for name, dist in problem.space.items()}
        schedule(now, trial, config, 1, None)

    for _ in range(workers):
        start_trial(0.0)
    while heap:
        now, _, (trial, config, epoch, state) = heapq.heappop(heap)
        reports, state = problem.objective(config, epoch - 1, epoch, state)
        value = float(reports[-1]["loss"])
        last[trial.number] = (float(epoch), value, config)
        trial.report(value, epoch)
        if epoch >= problem.max_t:
            study.tell(trial, value)
        elif trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif schedule(now, trial, config, epoch + 1, state):
            continue
        else:  # out of budget mid-trial: Optuna would stop the study here
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        start_trial(now)
    best = min(last.values(), key=lambda row: (-row[0], row[1]))
    return Outcome(problem.regret(best[2]), float(spent), len(study.trials),
                   time.process_time() - start_cpu)


#: DyHPO candidate configurations (``--methods dyhpo-...``; ``--dyhpo NAME=JSON``
#: adds more). ``dyhpo`` itself is the scheduler's defaults. These are the
#: settings screened for issue 16, all with the paper's choice of a new
#: configuration (``new_config_target="first_rung"``): ``lin2`` = Syne Tune's
#: linear rungs 1, 3, 5, ... (``rung_increment=2``); ``geo`` = geometric rungs
#: 1, 3, 9, 27, 81 (``reduction_factor=3``); ``sh25``/``sh50`` =
#: ``probability_sh``; ``dkgp`` = the deep-kernel surrogate; ``nocost`` =
#: ``cost_aware=False``; ``nocurve`` = ``curve_length=0``.
_PAPER = {"new_config_target": "first_rung"}
DYHPO_VARIANTS: dict[str, dict[str, Any]] = {
    "dyhpo-lin2-sh25": {**_PAPER, "rung_increment": 2, "probability_sh": 0.25},
    "dyhpo-lin2-sh50": {**_PAPER, "rung_increment": 2, "probability_sh": 0.5},
    "dyhpo-geo-sh25": {**_PAPER, "reduction_factor": 3, "probability_sh": 0.25},
    "dyhpo-geo-sh50": {**_PAPER, "reduction_factor": 3, "probability_sh": 0.5},
    "dyhpo-geo-sh50-nocost": {**_PAPER, "reduction_factor": 3, "probability_sh": 0.5,
                              "cost_aware": False},
    "dyhpo-geo-sh25-nocost": {**_PAPER, "reduction_factor": 3, "probability_sh": 0.25,
                              "cost_aware": False},
    "dyhpo-geo-sh50-dkgp": {**_PAPER, "reduction_factor": 3, "probability_sh": 0.5,
                            "surrogate": "dkgp"},
    "dyhpo-geo-sh50-nocurve": {**_PAPER, "reduction_factor": 3, "probability_sh": 0.5,
                               "curve_length": 0},
    "dyhpo-syne-tune": {"rung_increment": 2, "probability_sh": 0.25},
}

METHODS: dict[str, Method] = {
    "hyperband+tpe": _hyperband("tpe"),
    "hyperband+random": _hyperband("random"),
    "asha+random": _asha("random"),
    "asha-stopping+random": _asha("random", variant="stopping"),
    "asha+random, 5 brackets": _asha("random", brackets=5),
    "asha 5 br., Ray weights": _asha("random", brackets=5, bracket_weights="exponential"),
    "asha 5 br., round robin": _asha("random", brackets=5, bracket_weights="round_robin"),
    "dyhpo": _dyhpo(),
    **{name: _dyhpo(**extra) for name, extra in DYHPO_VARIANTS.items()},
    "random (full)": _rungflow(_random),
    "optuna random+SH": optuna_random_sh,
}

#: Issue 16's acceptance pairs: (method, peer, alternative) for a one-sided test
#: "method's regret is greater than peer's" (small p = method is worse).
ACCEPTANCE = (
    ("asha+random", "optuna random+SH"),
    ("asha-stopping+random", "optuna random+SH"),
    ("dyhpo", "asha+random"),
    ("dyhpo", "random (full)"),
)


def summarise(regrets: Sequence[float]) -> dict[str, float]:
    q1, med, q3 = np.percentile(regrets, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def p_worse(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided Mann-Whitney U: p-value of 'a's regrets are stochastically greater than b's'."""
    if np.allclose(a, b):
        return 1.0
    return float(mannwhitneyu(a, b, alternative="greater").pvalue)


def p_two_sided(a: Sequence[float], b: Sequence[float]) -> float:
    if np.allclose(a, b):
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _acceptance_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """ACCEPTANCE, with every DyHPO variant of the run held to ``dyhpo``'s pairs."""
    pairs = [(a, b) for a, b in ACCEPTANCE if a != "dyhpo"]
    for m in methods:
        if m.startswith("dyhpo"):
            pairs += [(m, b) for a, b in ACCEPTANCE if a == "dyhpo"]
    return [(a, b) for a, b in pairs if a in methods and b in methods]


def summarise_problem(
    pname: str, budget: float, methods: Sequence[str], outcomes: Mapping[str, Sequence[Outcome]]
) -> dict[str, Any]:
    """Print one problem's table and acceptance pairs; return its JSON report."""
    regrets = {m: [o.regret for o in outcomes[m]] for m in methods}
    stats = {m: summarise(r) for m, r in regrets.items()}
    best = min(stats, key=lambda m: stats[m]["median"])
    n = len(regrets[methods[0]])
    print(f"\n{pname}: R={PROBLEMS[pname].max_t}, budget {budget:g} epochs, {n} seeds")
    print(f"{'method':<26}{'median regret':>14}{'IQR':>20}{'p vs best':>10}"
          f"{'resource':>10}{'trials':>8}{'cpu s/run':>10}")
    for m in methods:
        s = stats[m]
        p = p_two_sided(regrets[m], regrets[best]) if m != best else float("nan")
        stats[m]["p_vs_best"] = p
        outs = outcomes[m]
        stats[m]["cpu_median"] = float(np.median([o.seconds for o in outs]))
        iqr = f"[{s['q1']:.4f}, {s['q3']:.4f}]"
        print(f"{m:<26}{s['median']:>14.4f}{iqr:>20}"
              f"{'best' if m == best else f'{p:.3f}':>10}"
              f"{np.mean([o.resource for o in outs]):>10.0f}"
              f"{np.mean([o.trials for o in outs]):>8.0f}"
              f"{stats[m]['cpu_median']:>10.2f}")
    pairs = []
    for a, b in _acceptance_pairs(methods):
        p = p_worse(regrets[a], regrets[b])
        ratio = stats[a]["median"] / max(stats[b]["median"], 1e-12)
        pairs.append({"method": a, "peer": b, "p_worse": p, "median_ratio": ratio})
        print(f"  {a} vs {b}: median ratio {ratio:.2f}, one-sided p({a} worse) = {p:.3f}")
    return {
        "budget": budget, "best": best, "stats": stats, "pairs": pairs, "regrets": regrets,
        "resource": {m: [o.resource for o in outcomes[m]] for m in methods},
        "cpu_seconds": {m: [o.seconds for o in outcomes[m]] for m in methods},
    }


def _parse_dyhpo(specs: Sequence[str]) -> list[str]:
    """``NAME=JSON`` -> a DyHPO method with those arguments (added to METHODS)."""
    names = []
    for spec in specs:
        name, _, raw = spec.partition("=")
        if not name.startswith("dyhpo") or not raw:
            raise SystemExit(f"error: --dyhpo {spec!r} must be dyhpo-NAME=JSON")
        METHODS[name] = _dyhpo(**json.loads(raw))
        names.append(name)
    return names


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget-trainings", type=float, default=30.0,
                        help="total resource in full trainings of R epochs (default 30)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"default: every method but the DyHPO variants; "
                             f"choices: {', '.join(METHODS)}")
    parser.add_argument("--dyhpo", nargs="*", default=[], metavar="dyhpo-NAME=JSON",
                        help="extra DyHPO variants, e.g. dyhpo-x='{\"probability_sh\": 0.5}'")
    parser.add_argument("--out", default=str(OUT / "search_quality.json"))
    args = parser.parse_args(argv)
    extra = _parse_dyhpo(args.dyhpo)
    if args.methods is None:
        args.methods = [m for m in METHODS if m not in DYHPO_VARIANTS and m not in extra] + extra
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"error: unknown method {unknown[0]!r}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.seeds} seeds, {args.workers} workers, "
          f"budget {args.budget_trainings:g} full trainings per run")
    report: dict[str, Any] = {"args": vars(args), "problems": {}}
    outcomes = {p: {m: [] for m in args.methods} for p in args.problems}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Seeds outermost (every problem and method of a seed, interleaved), and
    # the raw outcomes saved after each seed: a run cut short still holds the
    # same seeds for every row.
    for seed in seeds:
        for pname in args.problems:
            problem = PROBLEMS[pname]
            budget = args.budget_trainings * problem.max_t
            cpu = []
            for m in args.methods:
                outcome = METHODS[m](problem, seed, budget, args.workers)
                outcomes[pname][m].append(outcome)
                cpu.append(f"{m} {outcome.regret:.3f}/{outcome.seconds:.1f}s")
            print(f"  seed {seed} {pname}: " + ", ".join(cpu), flush=True)
        report["seeds_done"] = seed - args.first_seed + 1
        report["load_average"] = os.getloadavg()
        report["raw"] = {
            p: {m: [vars(o) for o in outs] for m, outs in per.items()}
            for p, per in outcomes.items()
        }
        out.write_text(json.dumps(report, indent=1))
        print(f"seed {seed} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    for pname in args.problems:
        budget = args.budget_trainings * PROBLEMS[pname].max_t
        report["problems"][pname] = summarise_problem(
            pname, budget, args.methods, outcomes[pname])
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    out.write_text(json.dumps(report, indent=1))
    print(f"\nsaved {out}")
    return report


def summarise_file(path: str) -> None:
    """Print the tables of a (possibly partial) saved run."""
    report = json.loads(pathlib.Path(path).read_text())
    args = report["args"]
    for pname, per in report["raw"].items():
        outcomes = {m: [Outcome(**o) for o in outs] for m, outs in per.items()}
        summarise_problem(pname, args["budget_trainings"] * PROBLEMS[pname].max_t,
                          list(outcomes), outcomes)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--summarise":
        summarise_file(sys.argv[2])
    else:
        main()
