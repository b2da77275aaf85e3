"""SeqRanges against a plain set of ints (hypothesis), and the text form kept in the store."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cloud.seqranges import SeqRanges, runs

pairs = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1])), max_size=20)


@given(pairs, st.integers(0, 250), st.integers(0, 250))
def test_matches_a_set(ranges, lo, hi):
    sr = SeqRanges(ranges)
    want = {s for a, b in ranges for s in range(a, b + 1)}
    assert len(sr) == len(want)
    assert all((s in sr) == (s in want) for s in range(-1, 260))
    starts = [a for a, _ in sr]
    ends = [b for _, b in sr]
    assert all(ends[i] + 1 < starts[i + 1] for i in range(len(starts) - 1))  # disjoint, not touching
    missing = {s for a, b in sr.missing(lo, hi) for s in range(a, b + 1)}
    assert missing == {s for s in range(lo, hi + 1) if s not in want}
    assert SeqRanges.parse(sr.text()) == sr


@given(st.sets(st.integers(1, 500)))
def test_runs_cover_exactly(seqs):
    rs = runs(sorted(seqs))
    assert SeqRanges(rs) == SeqRanges((s, s) for s in seqs)
    assert len(rs) == len(SeqRanges(rs).ranges)
