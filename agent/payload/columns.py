"""A decoded batch as columns: what a consumer that handles many readings at once (the cloud
ingest) reads instead of one ``Reading`` object per reading.

The compact decoder produces columns first and builds ``Reading`` objects from them only when
asked (``decode``), so both views come from the same parse and cannot disagree. Building a
``Reading`` costs about as much as decoding it; the ingest skips that step (bench/bench_ingest.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.payload.batch import Batch
from agent.reading import Reading

SeriesKey = tuple[str, str, str]  # (sensor_id, quantity, unit)


@dataclass(frozen=True, slots=True)
class Columns:
    """One batch, column by column (reading ``i`` is row ``i`` of every per-reading column).

    ``seqs`` is a ``range`` when the batch is gapless (the common case), so a consumer can
    de-duplicate by range instead of per reading. ``values[s]`` holds series ``s``'s values in
    reading order; ``positions()`` says which readings they belong to."""

    device: str
    batch_id: str
    first_seq: int
    last_seq: int
    series: list[SeriesKey]  # in order of first use
    flagsets: list[tuple[str, ...]]  # in order of first use
    series_col: Sequence[int]  # per reading: index into ``series``
    attrs: Sequence[int]  # per reading: flagset index << 2 | alarm << 1 | clock_synced
    seqs: Sequence[int]  # per reading, strictly increasing
    ts_ms: Sequence[int]  # per reading
    values: list[list[float]]  # per series, in reading order

    def __len__(self) -> int:
        return len(self.seqs)

    def positions(self) -> list[Sequence[int]]:
        """Per series, the indices of its readings. Sensors sampled round-robin (every channel
        once per cycle, the usual stream) give ``range`` objects without a pass over the column."""
        n, k = len(self.seqs), len(self.series)
        col = self.series_col
        if k == 1:
            return [range(n)]
        cycle = list(range(k))
        if list(col[:k]) == cycle and list(col) == (cycle * (n // k + 1))[:n]:
            return [range(s, n, k) for s in range(k)]
        out: list[list[int]] = [[] for _ in range(k)]
        for i, s in enumerate(col):
            out[s].append(i)
        return list(out)

    def readings(self) -> list[Reading]:
        """The same batch as ``Reading`` objects (what ``agent.payload.decode`` returns)."""
        series, flagsets, attrs, seqs, ts = self.series, self.flagsets, self.attrs, self.seqs, self.ts_ms
        cursors = [iter(v) for v in self.values]
        out = []
        for i, si in enumerate(self.series_col):
            sid, qty, unit = series[si]
            a = attrs[i]
            out.append(Reading(seqs[i], ts[i], bool(a & 1), sid, qty, next(cursors[si]), unit, flagsets[a >> 2],
                               bool(a & 2)))
        return out

    def batch(self) -> Batch:
        return Batch(self.device, self.batch_id, self.first_seq, self.last_seq, self.readings())

    @classmethod
    def of_batch(cls, batch: Batch) -> Columns:
        """Columns of a batch decoded reading by reading (the ``json`` encoding)."""
        series: dict[SeriesKey, int] = {}
        flagsets: dict[tuple[str, ...], int] = {}
        values: list[list[float]] = []
        series_col, attrs, seqs, ts = [], [], [], []
        for r in batch.readings:
            key = (r.sensor_id, r.quantity, r.unit)
            si = series.get(key)
            if si is None:
                si = series[key] = len(series)
                values.append([])
            fi = flagsets.setdefault(r.flags, len(flagsets))
            series_col.append(si)
            attrs.append(fi << 2 | r.alarm << 1 | r.clock_synced)
            seqs.append(r.seq)
            ts.append(r.ts_ms)
            values[si].append(float(r.value))
        return cls(batch.device, batch.batch_id, batch.first_seq, batch.last_seq, list(series), list(flagsets),
                   series_col, attrs, gapless(seqs), ts, values)


def gapless(seqs: list[int]) -> Sequence[int]:
    """Strictly increasing ``seqs`` as a ``range`` when they have no gap."""
    if seqs and seqs[-1] - seqs[0] == len(seqs) - 1:
        return range(seqs[0], seqs[-1] + 1)
    return seqs
