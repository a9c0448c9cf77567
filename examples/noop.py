"""A trainable that does nothing but report: measures orchestration overhead."""

from __future__ import annotations

from flows.trainable import SegmentContext, trainable


@trainable("noop")
def train_noop(ctx: SegmentContext) -> None:
    """Report ``loss = 1 / (1 + stop)`` plus a config-dependent offset at ``stop``."""
    offset = sum(float(v) for v in ctx.config.values() if isinstance(v, (int, float)))
    ctx.report(ctx.stop, loss=offset + 1.0 / (1.0 + ctx.stop))
