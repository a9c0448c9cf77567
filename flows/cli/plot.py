"""``rungflow plot``: learning curves with rung boundaries, as a PNG.

One line per trial (metric against resource, a dot per report), the best
trial drawn on top in red, and a dashed vertical line at
every resource where segments end: the rungs of HyperBand/ASHA, the
perturbation intervals of PBT. A PBT exploit (the trial took a donor's
weights and a new config) breaks the trial's line: a dotted link runs from
the donor's point to where the trial continues, marked with a triangle, so
an exploit never reads as a straight jump of one curve. Needs matplotlib (``pip install
'rungflow[plot]'``); the error says so when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from schedulers import Event, SegmentFinished, TrialPerturbed

__all__ = [
    "MAX_BOUNDARIES",
    "Exploit",
    "curves",
    "exploits",
    "pieces",
    "plot_curves",
    "register",
]

#: Above this many distinct segment ends (e.g. DyHPO's one-unit segments) the
#: lines would hide the curves, so none are drawn.
MAX_BOUNDARIES = 30


def curves(
    events: Sequence[Event], metric: str
) -> tuple[dict[str, list[tuple[float, float]]], list[float]]:
    """Per trial the ``(resource, metric)`` reports, and the sorted segment ends."""
    points: dict[str, list[tuple[float, float]]] = {}
    boundaries: set[float] = set()
    for event in events:
        if isinstance(event, SegmentFinished):
            boundaries.add(float(event.stop))
            line = points.setdefault(event.trial_id, [])
            for report in event.reports:
                value = report.get(metric)
                if isinstance(value, (int, float)) and report.get("resource") is not None:
                    line.append((float(report["resource"]), float(value)))
    return points, sorted(boundaries)


#: One exploit: ``(trial_id, donor_id, resource)``, where the trial continues from.
Exploit = tuple[str, str, float]


def exploits(events: Sequence[Event]) -> list[Exploit]:
    """Every PBT exploit in log order, as ``(trial_id, donor_id, donor_resource)``."""
    return [
        (e.trial_id, e.donor_id, float(e.donor_resource))
        for e in events
        if isinstance(e, TrialPerturbed) and e.donor_id != e.trial_id
    ]


def pieces(events: Sequence[Event], metric: str) -> dict[str, list[list[tuple[float, float]]]]:
    """Per trial its ``(resource, metric)`` reports, split into one piece per exploit."""
    out: dict[str, list[list[tuple[float, float]]]] = {}
    for event in events:
        if isinstance(event, TrialPerturbed) and event.donor_id != event.trial_id:
            out.setdefault(event.trial_id, [[]]).append([])
        elif isinstance(event, SegmentFinished):
            piece = out.setdefault(event.trial_id, [[]])[-1]
            for report in event.reports:
                value = report.get(metric)
                if isinstance(value, (int, float)) and report.get("resource") is not None:
                    piece.append((float(report["resource"]), float(value)))
    return out  # empty pieces kept: piece k+1 follows the trial's k-th exploit


def _value_at(line: list[tuple[float, float]], resource: float) -> float | None:
    """The donor's last reported value at ``resource`` (None if it reported none there)."""
    found = None
    for r, v in line:
        if abs(r - resource) < 1e-9:
            found = v
    return found


def plot_curves(status: dict[str, Any], events: Sequence[Event], output: Path) -> None:
    """Write the learning-curve PNG of an experiment to ``output``.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    metric = status["metric"]
    points, boundaries = curves(events, metric)
    best = (status.get("best") or {}).get("trial_id")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        if len(boundaries) <= MAX_BOUNDARIES:
            for b in boundaries:
                ax.axvline(b, color="0.85", linestyle="--", linewidth=0.8, zorder=0)
        moves = exploits(events)
        split = pieces(events, metric)

        def draw(trial_id: str, **style: Any) -> None:
            for i, piece in enumerate(p for p in split.get(trial_id, []) if p):
                xs, ys = zip(*piece, strict=True)
                ax.plot(xs, ys, **(style if i == 0 else {**style, "label": None}))

        for trial_id, line in sorted(points.items()):
            if line and trial_id != best:
                draw(trial_id, color="tab:blue", alpha=0.35, linewidth=1, marker=".",
                     markersize=4)
        if best is not None and points.get(best):
            draw(best, color="tab:red", linewidth=2, marker=".", label=f"best: {best}")
        seen: dict[str, int] = {}
        for n, (trial_id, donor, resource) in enumerate(moves):
            seen[trial_id] = seen.get(trial_id, 0) + 1
            start = _value_at(points.get(donor, []), resource)
            later = split.get(trial_id, [])[seen[trial_id]:]
            after = later[0] if later else []
            if start is None:
                continue
            ax.plot([resource], [start], linestyle="none", marker="^", markersize=6,
                    color="tab:orange", label="exploit (from donor)" if n == 0 else None,
                    zorder=3)
            if after:
                ax.plot([resource, after[0][0]], [start, after[0][1]], linestyle=":",
                        color="tab:orange", linewidth=1, zorder=2)
        if best is not None or moves:
            ax.legend(loc="best")
        ax.set_xlabel("resource")
        ax.set_ylabel(f"{metric} ({status['mode']})")
        ax.set_title(f"{status['experiment']} ({status['scheduler']}, {len(points)} trials)")
        fig.tight_layout()
        fig.savefig(output, format="png")
    finally:
        plt.close(fig)


def register(app: typer.Typer) -> None:
    """Attach ``plot`` to the rungflow CLI."""

    @app.command()
    def plot(
        experiment: Annotated[str, typer.Argument(help="Experiment name.")],
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="PNG file (default: NAME.png).")
        ] = None,
        db: Annotated[
            str | None,
            typer.Option("--db", help="SQLAlchemy URL (default: sqlite in ./.rungflow)."),
        ] = None,
    ) -> None:
        """Write a PNG of the learning curves with rung boundaries."""
        from flows.cli._common import _reading, err
        from flows.engine.status import experiment_status, load_events

        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError as exc:
            err.print(
                "[red]error:[/red] rungflow plot needs matplotlib: "
                "pip install 'rungflow\\[plot]'"  # rich markup: \\[ prints a literal [
            )
            raise typer.Exit(1) from exc
        with _reading(db) as store:
            events = load_events(store, experiment)
            status = experiment_status(store, experiment)
        target = output or Path(f"{experiment}.png")
        plot_curves(status, events, target)
        err.print(f"wrote {target}")
