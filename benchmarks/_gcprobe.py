"""Time the cyclic collector's passes while a benchmark loop runs (gc.callbacks)."""

from __future__ import annotations

import gc
import time
from typing import Any


class GCProbe:
    """Longest and total pause per generation between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.longest = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        gen = int(info["generation"])
        self.count[gen] += 1
        self.longest[gen] = max(self.longest[gen], 1e3 * (time.perf_counter() - self._t0))

    def start(self) -> GCProbe:
        gc.callbacks.append(self._callback)
        return self

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> str:
        return ("gc passes gen0/1/2 " + "/".join(str(c) for c in self.count)
                + ", longest gen-2 pause " + f"{self.longest[2]:.1f} ms")
