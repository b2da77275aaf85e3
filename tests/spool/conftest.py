"""Spool fixtures: a factory that opens spools in the test's own tmp dir and closes them afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.spool import Reading, Spool

TS0 = 1_767_225_600_000


def reading(i: int, *, alarm: bool = False, sensor: str = "s1", flags: tuple[str, ...] = ()) -> Reading:
    return Reading.new(
        ts_ms=TS0 + i * 1000,
        clock_synced=i % 3 != 0,
        sensor_id=sensor,
        quantity="ch4_ppm",
        value=1.5 + i * 0.001,
        unit="ppm",
        flags=flags,
        alarm=alarm,
    )


def readings(n: int, start: int = 0, **kw: Any) -> list[Reading]:
    return [reading(start + i, **kw) for i in range(n)]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeStatvfs:
    """Pretends the file system has ``free`` bytes available."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0

    def __call__(self, path: str) -> Any:
        self.calls += 1
        return type("St", (), {"f_bavail": self.free // 4096, "f_frsize": 4096})()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "spool.db"


@pytest.fixture
def make_spool(spool_path: Path) -> Iterator[Callable[..., Spool]]:
    opened: list[Spool] = []

    def make(path: Path | None = None, *, open_: bool = True, **kw: Any) -> Spool:
        args: dict[str, Any] = {"max_bytes": 64 << 20, "min_free_disk_bytes": 0, "commit_interval_s": 1.0}
        args.update(kw)
        sp = Spool(path or spool_path, **args)
        if open_:
            sp.open()
        opened.append(sp)
        return sp

    yield make
    for sp in opened:
        sp.close()


def crash(sp: Spool) -> None:
    """Lose the process's RAM without a clean close: pending readings vanish, committed ones stay."""
    conn = sp._store.detach()
    assert conn is not None
    sp._pending.clear()
    conn.close()


def all_rows(sp: Spool) -> list[Any]:
    return sp.read_after(0, 10_000_000)
