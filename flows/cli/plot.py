"""``rungflow plot``: learning curves with rung boundaries, as a PNG.

One line per trial (metric against resource, a dot per report), the best
trial drawn on top in red, and a dashed vertical line at
every resource where segments end: the rungs of HyperBand/ASHA, the
perturbation intervals of PBT. Needs matplotlib (``pip install
'rungflow[plot]'``); the error says so when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from schedulers import Event, SegmentFinished

__all__ = ["MAX_BOUNDARIES", "curves", "plot_curves", "register"]

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
        for trial_id, line in sorted(points.items()):
            if not line or trial_id == best:
                continue
            xs, ys = zip(*line, strict=True)
            ax.plot(xs, ys, color="tab:blue", alpha=0.35, linewidth=1, marker=".", markersize=4)
        if best is not None and points.get(best):
            xs, ys = zip(*points[best], strict=True)
            ax.plot(xs, ys, color="tab:red", linewidth=2, marker=".", label=f"best: {best}")
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
