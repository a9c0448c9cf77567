"""Learning curves as a small PNG, for the live Prefect artifact.

The Prefect UI renders markdown artifacts, and markdown can embed an image as
a ``data:image/png;base64,...`` URI: that is how the curves reach the UI
without a file server. matplotlib is optional (``pip install
'rungflow[plot]'``): without it :func:`curves_markdown` says so instead of
drawing. ``rungflow plot`` (:mod:`flows.cli.plot`) draws the full-size,
annotated version from the log.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

__all__ = ["curves_markdown", "curves_png"]

#: Curves drawn at most (the best ones): beyond that the image is a smear and
#: rendering it costs the background thread more than it shows.
MAX_CURVES = 60


def curves_png(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    *,
    metric: str,
    title: str,
    best: str | None = None,
) -> bytes | None:
    """PNG bytes of ``metric`` against resource, one line per trial; None without matplotlib.

    Args:
        curves: ``trial_id -> [(resource, value), ...]`` in report order.
        metric: Y-axis label.
        title: Figure title.
        best: Trial drawn on top in red.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display
        from matplotlib.figure import Figure
    except ModuleNotFoundError:
        return None
    # Figure() directly, not pyplot: pyplot keeps global state, and this runs
    # on a background thread while the user's trainables may use pyplot.
    fig = Figure(figsize=(6.4, 3.6), dpi=80)
    ax = fig.add_subplot()
    for trial_id, line in curves.items():
        if line and trial_id != best:
            xs, ys = zip(*line, strict=True)
            ax.plot(xs, ys, color="tab:blue", alpha=0.35, linewidth=1, marker=".", markersize=3)
    if best is not None and curves.get(best):
        xs, ys = zip(*curves[best], strict=True)
        ax.plot(xs, ys, color="tab:red", linewidth=2, marker=".", label=f"best: {best}")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("resource")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def curves_markdown(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    *,
    metric: str,
    title: str,
    best: str | None = None,
) -> str:
    """Markdown with the curves as an embedded PNG (or a note when matplotlib is absent)."""
    png = curves_png(curves, metric=metric, title=title, best=best)
    if png is None:
        return (
            f"### {title}\n\nLearning curves need matplotlib on the flow's machine: "
            "`pip install 'rungflow[plot]'`.\n"
        )
    data = base64.b64encode(png).decode("ascii")
    return f"### {title}\n\n![learning curves](data:image/png;base64,{data})\n"
