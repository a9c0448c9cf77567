"""Index for PBT's ``compare="matched"`` ranking: who beats a member at the same resource.

:class:`schedulers.pbt.PopulationBasedTraining` with ``compare="matched"``
judges member ``t`` at resource ``R`` against every other ranked member ``m``
at ``at(m)``, ``m``'s latest lineage result at or before ``R``: ``m`` is
better if ``(score_m(at), tiebreak_m) < (mine(at), tiebreak_t)``, where
``mine(at)`` is ``t``'s own lineage score at ``at`` (or its latest score if
its lineage has none there), except that the very same weights (same score,
trained by the same member) never beat themselves. Scanning the population
for that costs O(N) per decision (16 ms at 10,000 members).

Here every ranked member's lineage curve ``{r_1 < r_2 < ... < r_j}`` is
stored as one entry per result, in a bucket keyed by ``(r_i, r_{i+1})`` (the
last one's next level is ``inf``), plus a sentinel entry
``(-inf, r_1)`` for "no result yet". ``at(m) = r_i`` exactly when
``r_i <= R + eps < r_{i+1}``, so the buckets whose key straddles ``R + eps``
hold every ranked member exactly once, at its ``at``. Within a bucket the
entries are sorted by ``(score, tiebreak, member)``, so the members it
holds that beat ``t`` are a prefix found by bisection, and the same-weights
exception is a second bisection in a sub-bucket keyed by ``(score, trainer)``.
A decision costs O(B log N) for the B non-empty buckets straddling ``R``
(two per level the population spans, in practice). The layout is plain
builtins, so the scheduler still pickles into a snapshot.

Why a hand-written index and not numpy or a sorted-container package: the
rule compares lexicographic ``(float, int)`` keys, the tie-break is an
unsigned 64-bit int, and the bucket a member falls in depends on ``R``; a
vectorised scan stays O(N) per decision and would need the curves re-laid
into arrays on every result, while sorted Python lists compare exactly the
tuples the reference rule compares, so identity with the old scan holds by
construction (and ``tests/schedulers/test_pbt_matched.py`` checks it against
that scan).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

__all__ = ["MatchedIndex"]

_NONE = -math.inf  # level of the sentinel entry: no lineage result at or before R
_MEMBER = itemgetter(2)
_SAME_MEMBER = itemgetter(1)

# (score at the level, tie-break, member): sorted, lower beats higher.
_Entry = tuple[float, int, str]
# level -> (next level, score, trainer) of one member's lineage curve.
_Layout = dict[float, tuple[float, float, str]]


class MatchedIndex:
    """Ranked members' lineage curves, bucketed so "who beats ``t`` at ``R``" is a bisection."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[float, float], list[_Entry]] = {}
        # Same weights: (level, next level, score, trainer) -> sorted (tie-break, member).
        self._same: dict[tuple[float, float, float, str], list[tuple[int, str]]] = {}
        self._layout: dict[str, _Layout] = {}
        self._levels: dict[str, list[float]] = {}  # sorted keys of each layout

    def __contains__(self, tid: str) -> bool:
        return tid in self._layout

    def put(self, tid: str, tiebreak: int, curve: Mapping[float, tuple[float, str]]) -> None:
        """Index ``tid`` with its whole lineage ``curve`` (resource -> (score, trainer)).

        Used when a member enters the ranking or exploits (its lineage is
        replaced); only the entries that changed are moved.
        """
        want = _layout(curve)
        have = self._layout.get(tid, {})
        for r, v in have.items():
            if want.get(r) != v:
                self._discard(tid, tiebreak, r, v)
        for r, v in want.items():
            if have.get(r) != v:
                self._insert(tid, tiebreak, r, v)
        self._layout[tid] = want
        self._levels[tid] = sorted(want)

    def add(self, tid: str, tiebreak: int, r: float, score: float, by: str) -> None:
        """Record the result ``(score, by)`` at ``r`` in indexed ``tid``'s lineage.

        At most two entries move (the new one and its predecessor's next
        level), so a result costs O(log N) however long the curve is.
        """
        layout, levels = self._layout[tid], self._levels[tid]
        old = layout.get(r)
        if old is not None:  # a range trained again: same next level, new score
            new = (old[0], score, by)
            if new != old:
                self._discard(tid, tiebreak, r, old)
                self._insert(tid, tiebreak, r, new)
                layout[r] = new
            return
        i = bisect.bisect_left(levels, r)
        prev = levels[i - 1]  # the sentinel sorts first, so there always is one
        next_level = levels[i] if i < len(levels) else math.inf
        before = layout[prev]
        after = (r, before[1], before[2])
        self._discard(tid, tiebreak, prev, before)
        self._insert(tid, tiebreak, prev, after)
        layout[prev] = after
        layout[r] = (next_level, score, by)
        self._insert(tid, tiebreak, r, layout[r])
        levels.insert(i, r)

    def drop(self, tid: str, tiebreak: int) -> None:
        """Remove ``tid`` (it left the ranking); a no-op if it is not indexed."""
        self._levels.pop(tid, None)
        for r, v in self._layout.pop(tid, {}).items():
            self._discard(tid, tiebreak, r, v)

    def _insert(self, tid: str, tiebreak: int, r: float, v: tuple[float, float, str]) -> None:
        s, score, by = v
        bisect.insort(self._buckets.setdefault((r, s), []), (score, tiebreak, tid))
        if r != _NONE:
            bisect.insort(self._same.setdefault((r, s, score, by), []), (tiebreak, tid))

    def _discard(self, tid: str, tiebreak: int, r: float, v: tuple[float, float, str]) -> None:
        s, score, by = v
        _remove(self._buckets, (r, s), (score, tiebreak, tid))
        if r != _NONE:
            _remove(self._same, (r, s, score, by), (tiebreak, tid))

    def better(
        self,
        tid: str,
        tiebreak: int,
        resource: float,
        eps: float,
        curve: Mapping[float, tuple[float, str]],
        latest: float,
    ) -> tuple[int, list[tuple[list[_Entry], int, list[tuple[int, str]]]]]:
        """How many indexed members beat ``tid`` at the same resource, and where the rest are.

        Args:
            tid: The member being judged (its own entries never count).
            tiebreak: Its seed-derived tie-break.
            resource: Its resource ``R``; a member's level is its latest
                result at or before ``R + eps``.
            eps: The scheduler's float tolerance.
            curve: Its lineage curve (resource -> (score, trainer)).
            latest: Its latest score, compared where its lineage has no result.

        Returns:
            ``(count, parts)``: the number of members that beat ``tid``, and per
            straddling bucket ``(entries, cut, same)``, where ``entries[:cut]``
            minus ``same`` are the members that beat it; see :meth:`losers`.
        """
        hi = resource + eps
        count = 0
        parts: list[tuple[list[_Entry], int, list[tuple[int, str]]]] = []
        for (r, s), entries in self._buckets.items():
            if not r <= hi or s <= hi:
                continue
            if r == _NONE:
                parts.append((entries, 0, []))
                continue
            mine, mine_by = curve.get(r) or (latest, tid)
            cut = bisect.bisect_left(entries, (mine, tiebreak))
            same = self._same.get((r, s, mine, mine_by), [])
            # Same weights with a smaller tie-break sort before the cut but do not beat tid.
            same = same[: bisect.bisect_left(same, (tiebreak,))]
            count += cut - len(same)
            parts.append((entries, cut, same))
        return count, parts

    @staticmethod
    def losers(parts: list[tuple[list[_Entry], int, list[tuple[int, str]]]]) -> set[str]:
        """Members that do not beat the judged one (it may be among them), from :meth:`better`."""
        out: set[str] = set()
        for entries, cut, same in parts:
            out.update(map(_MEMBER, entries[cut:]))
            out.update(map(_SAME_MEMBER, same))
        return out


def _layout(curve: Mapping[float, tuple[float, str]]) -> _Layout:
    """Entries of one lineage curve: level -> (next level, score, trainer), plus the sentinel."""
    levels = sorted(curve)
    out: _Layout = {_NONE: (levels[0] if levels else math.inf, 0.0, "")}
    for i, r in enumerate(levels):
        score, by = curve[r]
        out[r] = (levels[i + 1] if i + 1 < len(levels) else math.inf, score, by)
    return out


def _remove(index: dict[Any, list[Any]], key: Any, item: Any) -> None:
    """Delete ``item`` from the sorted list ``index[key]``; drop the list once empty."""
    items = index[key]
    del items[bisect.bisect_left(items, item)]
    if not items:
        del index[key]
