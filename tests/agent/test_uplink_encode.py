"""A batch waiting for its age is not re-encoded on every group commit. It was: each commit (once a
second) encoded the whole growing batch to see whether it was full, quadratic in the batch age and
44 % of a 500-gateway fleet simulation's CPU. A batch that does fill its budget still goes as soon
as a look finds it full, alarms at once, and everything else at its age."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from agent import payload
from agent.config import UplinkConfig
from agent.reading import NewReading
from agent.spool import Spool
from agent.uplink import Uplink


class _Recorder:
    """Stands in for the broker side of the connection: acknowledges and keeps every payload."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.on_connect_cbs: list[Any] = []

    def on_connect(self, cb: Any) -> None:
        self.on_connect_cbs.append(cb)

    async def publish(self, topic: str, encoded: bytes, **_kw: Any) -> None:
        self.sent.append(encoded)


def _second(spool: Spool, k: int, alarm: bool = False) -> None:
    """One second of a gateway: 8 channels, then the group commit."""
    now = int(time.time() * 1000) + k * 1000
    spool.append([NewReading(now, True, f"head-{c // 4}", f"q{c % 4}", 2.0 + 0.01 * ((k * 7 + c) % 5), "ppm",
                             alarm=alarm and c == 0) for c in range(8)])
    spool.commit()


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def counted_fit(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = payload.fit

    def fit(device: str, readings: Any, *args: Any, **kw: Any) -> tuple[bytes, int]:
        calls.append(len(readings))
        return real(device, readings, *args, **kw)

    monkeypatch.setattr(payload, "fit", fit)
    return calls


def _spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool.db", max_bytes=1 << 26, min_free_disk_bytes=0, commit_interval_s=1.0)
    spool.open()
    return spool


def test_a_batch_waiting_for_its_age_is_encoded_once(tmp_path: Path, counted_fit: list[int]) -> None:
    async def scenario() -> None:
        spool = _spool(tmp_path)
        clock = _Clock()
        up = Uplink(spool, _Recorder(), UplinkConfig(batch_max_age_s=60), "gw-1", "site-1",  # type: ignore[arg-type]
                    clock=clock)
        try:
            for k in range(59):  # a minute of commits, each followed by the uplink's look
                _second(spool, k)
                assert await up.send_due() is not None  # not due: nothing sent
            assert counted_fit == []  # 472 readings of ~1 byte each cannot fill 5 KB: not encoded
            clock.now += 60  # the batch's age is reached
            assert await up.send_due() is None
            await up.settle()
            assert counted_fit == [59 * 8]
            assert up.stats.readings_acked == 59 * 8
        finally:
            spool.close()

    asyncio.run(scenario())


def test_an_alarm_goes_at_once(tmp_path: Path, counted_fit: list[int]) -> None:
    async def scenario() -> None:
        spool = _spool(tmp_path)
        up = Uplink(spool, _Recorder(), UplinkConfig(batch_max_age_s=60), "gw-1", "site-1")  # type: ignore[arg-type]
        try:
            _second(spool, 0)
            assert await up.send_due() is not None
            _second(spool, 1, alarm=True)
            assert await up.send_due() is None
            await up.settle()
            assert up.stats.readings_acked == 16 and counted_fit == [16]
        finally:
            spool.close()

    asyncio.run(scenario())


def test_a_batch_that_fills_its_budget_goes_before_its_age(tmp_path: Path, counted_fit: list[int]) -> None:
    async def scenario() -> None:
        spool = _spool(tmp_path)
        rec = _Recorder()
        conf = UplinkConfig(encoding="json", batch_max_bytes=5120, batch_max_age_s=3600)
        up = Uplink(spool, rec, conf, "gw-1", "site-1")  # type: ignore[arg-type]
        try:
            k = 0
            while not rec.sent:
                assert k < 20, "a full JSON batch (~30 readings in 5 KB) was not sent within 20 s of readings"
                _second(spool, k)
                k += 1
                while await up.send_due() == 0.0:
                    pass
                await up.settle()
            assert k <= 5  # 8 readings a second: the 5 KB budget is full in 4 seconds
            assert all(len(p) <= up.max_payload for p in rec.sent)
        finally:
            spool.close()

    asyncio.run(scenario())


def test_on_acked_runs_after_each_acknowledged_batch_only(tmp_path: Path) -> None:
    """The runtime gives a batch's encoding memory back from this hook (agent/heap.py)."""
    from agent.connection import PublishError

    class _Refusing(_Recorder):
        async def publish(self, topic: str, encoded: bytes, **_kw: Any) -> None:
            raise PublishError("refused")

    async def scenario() -> None:
        spool = _spool(tmp_path)
        acked: list[int] = []
        conf = UplinkConfig(batch_max_age_s=60)
        up = Uplink(spool, _Recorder(), conf, "gw-1", "site-1", on_acked=lambda: acked.append(up.stats.batches_acked))  # type: ignore[arg-type]
        try:
            _second(spool, 0, alarm=True)  # an alarm goes at once
            assert await up.send_due() is None
            await up.settle()
            assert acked == [1]  # after the batch was counted acknowledged
            up.conn = _Refusing()  # type: ignore[assignment]
            _second(spool, 1, alarm=True)
            await up.send_due()
            await up.settle()
            assert up.stats.failures == 1 and acked == [1]
        finally:
            spool.close()

    asyncio.run(scenario())
