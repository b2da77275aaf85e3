"""``methane-agent decode`` as an operator runs it: a subprocess reading a file or stdin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import payload
from agent.payload import Batch
from agent.reading import Reading
from tests.payload.conftest import DEVICE


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "decode", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
def test_cli_round_trip_file_and_stdin(encoding: str, stream: list[Reading], tmp_path: Path) -> None:
    batch = Batch(DEVICE, payload.batch_id(DEVICE, 1, 60), 1, 60, stream[:60])
    data = payload.encode(batch, encoding)
    path = tmp_path / f"batch.{encoding}"
    path.write_bytes(data)
    by_file = _run(str(path))
    by_stdin = _run("-", "--content-type", payload.content_type(encoding), stdin=data)
    for proc in (by_file, by_stdin):
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
        assert len(lines) == 60
        for line, r in zip(lines, stream[:60], strict=True):
            assert line["device"] == DEVICE and line["batch_id"] == batch.batch_id
            got = Reading(
                line["seq"], line["ts_ms"], line["clock_synced"], line["sensor_id"], line["quantity"],
                line["value"], line["unit"], tuple(line["flags"]), line["alarm"],
            )  # fmt: skip
            assert got == r


def test_cli_envelope_line(stream: list[Reading], tmp_path: Path) -> None:
    data = payload.encode(Batch(DEVICE, "custom-id", 1, 10, stream[:8]), "compact")
    proc = _run("--envelope", stdin=data)
    assert proc.returncode == 0, proc.stderr
    first, *rest = (json.loads(x) for x in proc.stdout.decode().splitlines())
    assert first == {
        "device": DEVICE, "batch_id": "custom-id", "first_seq": 1, "last_seq": 10, "count": 8,
        "encoding": "compact", "bytes": len(data),
    }  # fmt: skip
    assert len(rest) == 8 and "device" not in rest[0]


def test_cli_bad_payload_exits_2_with_a_reason(tmp_path: Path) -> None:
    proc = _run(stdin=b"\x93MB\x01garbage!")
    assert proc.returncode == 2
    assert b"bad payload" in proc.stderr and b"CRC" in proc.stderr
    assert proc.stdout == b""
    missing = _run(str(tmp_path / "nope.bin"))
    assert missing.returncode == 2 and b"cannot read" in missing.stderr
    wrong_ct = _run("--content-type", "text/plain", stdin=b"{}")
    assert wrong_ct.returncode == 2 and b"unsupported content type" in wrong_ct.stderr
