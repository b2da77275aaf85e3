"""Hypothesis: any sequence of append / commit / ack / reopen / crash keeps the spool's invariants."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agent.spool import Reading, Spool
from agent.spool import sidecar as spool_sidecar

from .conftest import crash


def new_spool(path: Path) -> Spool:
    sp = Spool(path, max_bytes=64 << 20, min_free_disk_bytes=0, commit_interval_s=1.0)
    sp.open()
    return sp


text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
new_readings = st.lists(
    st.builds(
        Reading.new,
        ts_ms=st.integers(-(2**63), 2**63 - 1),
        clock_synced=st.booleans(),
        sensor_id=st.sampled_from(["s1", "s2"]) | text,
        quantity=st.sampled_from(["ch4_ppm", "temp"]),
        value=st.floats(allow_nan=False),
        unit=st.sampled_from(["ppm", "", "degC"]),
        flags=st.lists(st.sampled_from(["stale", "warming_up"]) | text, max_size=2).map(tuple),
        alarm=st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


class SpoolMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="spool-prop-"))
        self.path = self.dir / "spool.db"
        self.sp = new_spool(self.path)
        self.committed: dict[int, Reading] = {}  # committed and not acked
        self.pending: dict[int, Reading] = {}
        self.acked: set[int] = set()
        self.high = 0  # committed high-water mark

    @rule(items=new_readings)
    def append(self, items: list[Reading]) -> None:
        out = self.sp.append(items)
        expected_first = self.high + len(self.pending) + 1
        assert [r.seq for r in out] == list(range(expected_first, expected_first + len(items)))
        for r, item in zip(out, items, strict=True):
            self.pending[r.seq] = item

    @rule()
    def commit(self) -> None:
        assert self.sp.commit() == len(self.pending)
        self.committed.update(self.pending)
        if self.pending:
            self.high = max(self.pending)
        self.pending.clear()

    @precondition(lambda self: bool(self.committed) or bool(self.acked))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        first = data.draw(st.integers(1, self.high))
        last = data.draw(st.integers(first, self.high + 3))
        expected = [s for s in self.committed if first <= s <= last]
        assert self.sp.ack(first, last) == len(expected)
        for s in expected:
            del self.committed[s]
            self.acked.add(s)

    @rule()
    def reopen(self) -> None:
        self.sp.close()  # a clean close commits what is pending
        self.commit_model()
        self.sp = new_spool(self.path)

    @rule()
    def crash_and_restart(self) -> None:
        crash(self.sp)
        self.pending.clear()  # lost; their numbers will be handed out again
        self.sp = new_spool(self.path)

    def commit_model(self) -> None:
        self.committed.update(self.pending)
        if self.pending:
            self.high = max(self.pending)
        self.pending.clear()

    @invariant()
    def returns_exactly_the_unacked_committed_readings_in_order(self) -> None:
        rows = self.sp.read_after(0, 1_000_000)
        assert [r.seq for r in rows] == sorted(self.committed)
        for r in rows:
            item = self.committed[r.seq]
            assert (r.ts_ms, r.sensor_id, r.value, r.flags, r.alarm, r.clock_synced) == (
                item.ts_ms, item.sensor_id, item.value, item.flags, item.alarm, item.clock_synced,
            )
        # Paging from any point gives the same tail.
        if rows:
            mid = rows[len(rows) // 2].seq
            assert [r.seq for r in self.sp.read_after(mid, 1_000_000)] == [s for s in sorted(self.committed) if s > mid]

    @invariant()
    def committed_history_is_gapless_and_acked_never_return(self) -> None:
        assert set(self.committed) | self.acked == set(range(1, self.high + 1))
        assert not set(self.committed) & self.acked
        st_ = self.sp.stats()
        assert st_.readings == len(self.committed)
        assert st_.committed_seq == self.high
        assert st_.next_seq == self.high + len(self.pending) + 1
        assert st_.oldest_seq == (min(self.committed) if self.committed else None)
        assert st_.evicted_routine == st_.evicted_alarm == 0

    def teardown(self) -> None:
        if hasattr(self, "sp"):
            self.sp.close()
            shutil.rmtree(self.dir, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestSpoolProperties = SpoolMachine.TestCase


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode) | st.builds(
    lambda d: json.dumps(d).encode(),
    st.dictionaries(st.sampled_from(["version", "quarantined", "seq_reserved", "seq_committed", "x"]),
                    st.none() | st.booleans() | st.integers(-5, 2**70) | st.text(max_size=5)),
))
def test_sidecar_parser_never_raises_and_only_accepts_sane_state(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.json"
        p.write_bytes(raw)
        state = spool_sidecar.load(p)
    if state is not None:
        for v in (state.quarantined, state.seq_reserved, state.seq_committed):
            assert isinstance(v, int) and not isinstance(v, bool) and v >= 0


@settings(max_examples=25, deadline=None)
@given(raw=st.binary(min_size=1, max_size=4096), keep_header=st.booleans())
def test_any_bytes_as_a_spool_file_open_into_a_working_spool(raw: bytes, keep_header: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spool.db"
        if keep_header:  # a plausible SQLite header followed by junk
            raw = b"SQLite format 3\x00" + raw
        path.write_bytes(raw)
        sp = new_spool(path)
        try:
            assert sp.stats().quarantined in (0, 1)
            got = sp.append([Reading.new(1, True, "s", "q", 1.0, "u")])
            assert sp.commit() == 1
            assert [r.seq for r in sp.read_after(0, 10)] == [got[0].seq]
        finally:
            sp.close()
