"""Sets of sequence numbers kept as sorted, disjoint, inclusive ranges: which readings of one
device (and epoch) have arrived. Delivery is at-least-once and in order almost always, so a
device's history collapses to a handful of ranges however many readings it sent."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress


class SeqRanges:
    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for a, b in ranges:
            self.add(a, b)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        """Number of sequence numbers held (not of ranges)."""
        return sum(b - a + 1 for a, b in self)

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        i = bisect.bisect_right(self._starts, seq) - 1
        return i >= 0 and seq <= self._ends[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeqRanges) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"SeqRanges({list(self)!r})"

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(self)

    def add(self, a: int, b: int) -> None:
        """Insert [a, b], merging with neighbours that overlap or touch."""
        if a > b:
            raise ValueError(f"empty range {a}-{b}")
        i = bisect.bisect_left(self._ends, a - 1)  # first range that may touch [a, b]
        j = i
        while j < len(self._starts) and self._starts[j] <= b + 1:
            a = min(a, self._starts[j])
            b = max(b, self._ends[j])
            j += 1
        self._starts[i:j] = [a]
        self._ends[i:j] = [b]

    def update(self, other: Iterable[tuple[int, int]]) -> None:
        for a, b in other:
            self.add(a, b)

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ranges inside [lo, hi] not held."""
        out: list[tuple[int, int]] = []
        expect = lo
        for a, b in self:
            if b < expect:
                continue
            if a > hi:
                break
            if a > expect:
                out.append((expect, min(a - 1, hi)))
            expect = b + 1
        if expect <= hi:
            out.append((expect, hi))
        return out

    def text(self) -> str:
        """``1-240,245-300`` (a single seq is ``7-7``): the form kept in the store."""
        return ",".join(f"{a}-{b}" for a, b in self)

    @classmethod
    def parse(cls, text: str) -> SeqRanges:
        out = cls()
        for part in filter(None, text.split(",")):
            a, sep, b = part.partition("-")
            if not sep:
                raise ValueError(f"bad seq range {part!r} (want A-B)")
            out.add(int(a), int(b))
        return out


def runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive runs of increasing ``seqs`` as ranges."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def new_readings(seqs: Sequence[int], seen: SeqRanges) -> tuple[SeqRanges, list[bool] | None]:
    """(the seqs of ``seqs`` not in ``seen`` as ranges, a per-reading "is new" mask or None when
    every reading is new). ``seqs`` is strictly increasing, and a ``range`` when gapless: then
    nothing is looked at per reading unless the batch overlaps what arrived before."""
    lo, hi = seqs[0], seqs[-1]
    missing = seen.missing(lo, hi)
    if missing == [(lo, hi)]:  # nothing in [lo, hi] arrived yet: the usual batch
        return SeqRanges(missing if isinstance(seqs, range) else runs(seqs)), None
    if not missing:  # a resend: everything arrived
        return SeqRanges(), [False] * len(seqs)
    keep = [s not in seen for s in seqs]
    return SeqRanges(missing if isinstance(seqs, range) else runs(compress(seqs, keep))), keep
