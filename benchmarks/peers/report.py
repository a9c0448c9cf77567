"""Turn the workers' JSON into ``report.md`` and PNG plots.

Every figure is computed here from the raw traces with one rule for all
systems (:func:`benchmarks.peers.common.incumbent`), so "best" means the same
thing for rungflow, Ray Tune, Optuna and Syne Tune.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers.common import incumbent
from benchmarks.peers.cost import summarise
from benchmarks.peers.problems import PROBLEMS

__all__ = ["write_report"]

_LABEL = {"rungflow": "rungflow", "ray": "Ray Tune", "optuna": "Optuna", "synetune": "Syne Tune"}
_CURVE_POINTS = 24


def _optimum(problem: str, runs: list[dict[str, Any]]) -> tuple[float, str]:
    known = PROBLEMS[problem].known_optimum
    if known is not None:
        return known, "known optimum"
    best = min(row[3] for run in runs for row in run["rows"])
    return best, "best validation error any system reached in this run (empirical)"


def _curve(rows: list[list[Any]], budget: float, optimum: float) -> list[float]:
    """Regret of the incumbent after each of ``_CURVE_POINTS`` fractions of the budget."""
    out, i = [], 0
    for k in range(1, _CURVE_POINTS + 1):
        limit = budget * k / _CURVE_POINTS
        while i < len(rows) and rows[i][0] <= limit + 1e-9:
            i += 1
        inc = incumbent(rows[:i])
        out.append(np.nan if inc is None else inc[1] - optimum)
    return out


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4f}"


def write_report(results: dict[str, dict[str, Any]], skipped: dict[str, str], out: Path,
                 quick: bool, elapsed: float, load: tuple[float, float] = (0.0, 0.0)) -> Path:
    """Write ``out/report.md`` (+ PNGs) from the per-system results; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: list[str] = []
    versions: dict[str, str] = {}
    for res in results.values():
        versions.update(res.get("versions", {}))
    today = dt.date.today().isoformat()
    lines += [
        "# rungflow against Ray Tune, Optuna and Syne Tune",
        "",
        f"Run on {today} ({'--quick smoke run' if quick else 'full run'}, "
        f"{elapsed / 60:.1f} min) on {platform.machine()} with 2 cores; "
        "all systems measured side by side in one invocation of "
        "`python benchmarks/peers/run.py`. Load average (1 min) at start / end: "
        f"{load[0]:.1f} / {load[1]:.1f}; other processes on a shared machine inflate "
        "absolute times, so read the ratios. Overhead figures are min / median / max "
        "over 3 repeats (1 in --quick), each system's variants in rotated order.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".",
        "",
    ]
    if skipped:
        lines += ["Skipped: " + "; ".join(f"{_LABEL.get(k, k)}: {v}" for k, v in skipped.items()),
                  ""]

    # ----------------------------------------------------------- overhead
    lines += ["## Orchestration overhead per reported result (no-op trainable)", ""]
    scenarios: dict[str, dict[str, tuple[list[dict[str, float]], int]]] = defaultdict(dict)
    for res in results.values():
        for scenario, data in res.get("overhead", {}).items():
            for label, runs in data["runs"].items():
                scenarios[scenario][label] = (runs, data["results"])
    overhead_png = out / "overhead.png"
    if scenarios:
        lines += [
            "Two trials at a time, no early stopping, the trainable does nothing but report. "
            "rungflow runs through its real Prefect `tune` flow (SQLite event log, one Prefect "
            "task per segment, ephemeral Prefect API); the bare Prefect loop is the same "
            "submit/as_completed pattern without rungflow. Ray Tune runs function trainables "
            "on a local 2-CPU cluster with actor reuse; Optuna uses `n_jobs=2`. "
            "CPU is every process the system used, read from `/proc`: the driver, and its "
            "other processes (Prefect's API server, which records each task run seconds "
            "later, or Ray's raylet, GCS and workers); a Prefect server's backlog is drained "
            "before a variant starts and before its CPU is read. Ratios are rungflow's median "
            "divided by the other system's.",
            "",
        ]
        fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 3.8))
        axes = np.atleast_1d(axes)
        for ax, (scenario, data) in zip(axes, scenarios.items(), strict=True):
            n_results = next(iter(data.values()))[1]
            lines += [f"**{scenario}** ({n_results} results)", "",
                      "| system | CPU ms per result (min / median / max) | wall ms per result "
                      "| rungflow / system, CPU | rungflow / system, wall |",
                      "|---|---:|---:|---:|---:|"]
            cpu = {label: [1000 * (r["client"] + r["others"]) / n for r in runs]
                   for label, (runs, n) in data.items()}
            wall = {label: [1000 * r["wall"] / n for r in runs]
                    for label, (runs, n) in data.items()}
            med_cpu = {label: float(np.median(v)) for label, v in cpu.items()}
            med_wall = {label: float(np.median(v)) for label, v in wall.items()}
            ref = "rungflow (Prefect flow)"
            for label in sorted(med_cpu, key=med_cpu.__getitem__):
                figures = summarise(data[label][0], n_results)
                ratio_cpu = (f"{med_cpu[ref] / med_cpu[label]:.1f}x"
                             if ref in med_cpu and med_cpu[label] else "n/a")
                ratio_wall = (f"{med_wall[ref] / med_wall[label]:.1f}x"
                              if ref in med_wall and med_wall[label] else "n/a")
                lines.append(f"| {label} | {figures['cpu']} | {figures['wall']} "
                             f"| {ratio_cpu} | {ratio_wall} |")
            lines.append("")
            names = sorted(med_cpu, key=med_cpu.__getitem__)
            ax.barh(names, [med_cpu[n] for n in names],
                    color=["C3" if n.startswith("rungflow") else "C0" for n in names])
            ax.set_xscale("log")
            ax.set_xlabel("CPU ms per reported result, all processes (log)")
            ax.set_title(scenario)
        fig.tight_layout()
        fig.savefig(overhead_png, dpi=110)
        plt.close(fig)
        lines += [f"![overhead]({overhead_png.name})", ""]

    # ------------------------------------------------------------ quality
    lines += ["## Search quality at equal total resource", ""]
    lines += [
        "Every system gets the same budget of epochs per seed (the sum over all trials of "
        "the epochs trained), the same problem code (`benchmarks/peers/problems.py`), two "
        "workers, reduction factor 3 and grace period 1. The returned trial is chosen by one "
        "rule for all systems: the trial at the highest resource, then the lowest value. "
        "Final regret = its value minus the optimum. rungflow's schedulers run in "
        "`schedulers.simulate` (the same scheduler code the flow calls, simulated time); "
        "Syne Tune's schedulers are driven the same way; Ray Tune and Optuna run for real. "
        "PBT's population is budget / max_t members trained to max_t once.",
        "",
    ]
    by_problem: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for system, res in results.items():
        for run in res.get("quality", []):
            by_problem[run["problem"]].append((system, run))
    curve_png = out / "regret_vs_resource.png"
    if by_problem:
        fig, axes = plt.subplots(1, len(by_problem), figsize=(6.5 * len(by_problem), 4.5))
        axes = np.atleast_1d(axes)
        for ax, (pname, entries) in zip(axes, by_problem.items(), strict=True):
            optimum, how = _optimum(pname, [run for _, run in entries])
            problem = PROBLEMS[pname]
            budget = entries[0][1]["budget"]
            lines += [
                f"### {pname} (max_t = {problem.max_t}, budget = {budget} epochs "
                f"= {budget / problem.max_t:.0f} full trainings; optimum: {how} = {optimum:.4f})",
                "",
                "| system | method | runs | median final regret | IQR | resource used | "
                "trials | s/run | vs rungflow asha |",
                "|---|---|---:|---:|---|---:|---:|---:|---:|",
            ]
            groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
            for system, run in entries:
                groups[(system, run["method"], run["mode"])].append(run)
            medians: dict[tuple[str, str, str], float] = {}
            stats = {}
            for key, runs in groups.items():
                regrets = []
                for run in runs:
                    inc = incumbent(run["rows"])
                    regrets.append(np.nan if inc is None else inc[1] - optimum)
                q1, med, q3 = np.nanpercentile(regrets, [25, 50, 75])
                medians[key] = med
                stats[key] = (runs, q1, med, q3)
            ref = medians.get(("rungflow", "asha", "simulated"))
            for key in sorted(stats, key=lambda k: stats[k][2]):
                runs, q1, med, q3 = stats[key]
                system, method, mode = key
                label = _LABEL.get(system, system) + (" (Prefect flow)"
                                                      if mode == "prefect flow" else "")
                used = np.mean([run["rows"][-1][0] if run["rows"] else 0 for run in runs])
                ratio = f"{med / ref:.2f}" if ref and ref > 0 else "n/a"
                lines.append(
                    f"| {label} | {method} | {len(runs)} | {_fmt(med)} | "
                    f"[{_fmt(q1)}, {_fmt(q3)}] | {used:.0f} | "
                    f"{np.mean([r['trials'] for r in runs]):.0f} | "
                    f"{np.mean([r['seconds'] for r in runs]):.1f} | {ratio} |"
                )
                if mode == "prefect flow":
                    continue
                curves = np.array([_curve(r["rows"], budget, optimum) for r in runs])
                xs = [budget * (k + 1) / _CURVE_POINTS for k in range(_CURVE_POINTS)]
                style = "-" if system == "rungflow" else "--"
                ax.plot(xs, np.nanmedian(curves, axis=0), style,
                        label=f"{_LABEL.get(system, system)} {method}")
            lines.append("")
            flow = groups.get(("rungflow", "asha", "prefect flow"))
            sim = [r for r in groups.get(("rungflow", "asha", "simulated"), []) if r["seed"] == 0]
            if flow and sim:
                f_inc, s_inc = incumbent(flow[0]["rows"]), incumbent(sim[0]["rows"])
                if f_inc and s_inc:
                    lines += [
                        "Sanity check of the simulation: ASHA seed 0 through the real Prefect "
                        f"flow reached regret {f_inc[1] - optimum:.4f} with "
                        f"{flow[0]['trials']} trials; simulated, {s_inc[1] - optimum:.4f} with "
                        f"{sim[0]['trials']} trials. Decisions differ because segments finish in "
                        "another order (real threads vs simulated durations); one seed is no "
                        "comparison, it shows the flow runs the same search end to end.",
                        "",
                    ]
            if PROBLEMS[pname].known_optimum is None:
                lines += [
                    "Validation errors are multiples of 1/540 (0.0019), so many medians tie.",
                    "",
                ]
            ax.set_yscale("log")
            ax.set_xlabel("total resource (epochs)")
            ax.set_ylabel("median regret of the incumbent (log)")
            ax.set_title(pname)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(curve_png, dpi=110)
        plt.close(fig)
        lines += [f"![regret vs resource]({curve_png.name})", ""]

    errors = [f"{system}: {e.strip().splitlines()[-1]}" for system, res in results.items()
              for e in res.get("errors", [])]
    if errors:
        lines += ["## Errors", "", *[f"- {e}" for e in errors], ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
