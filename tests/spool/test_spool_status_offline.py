"""`methane-agent status` with no daemon reads the spool through Spool.peek: counts and the
sequence's state, strictly read-only (the file is byte-for-byte unchanged)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from agent.spool import Spool, SpoolError

from .conftest import crash, reading, readings


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_status_without_a_daemon_reports_the_spool_read_only(tmp_path, make_spool):
    state = tmp_path / "state"
    sp = make_spool(state / "spool.db")
    sp.append([*readings(5), reading(5, alarm=True)])
    sp.commit()
    epoch = sp.epoch
    sp.close()
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\n\n[[sensors]]\nid = "sim"\ndriver = "simulated"\n')
    before = digest(state / "spool.db")
    out = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 3, out.stderr
    doc = json.loads(out.stdout)
    assert doc["running"] is False
    spool = doc["spool"]
    assert (spool["readings"], spool["alarm_readings"]) == (6, 1)
    assert spool["epoch"] == epoch and spool["clean_shutdown"] is True and spool["seq_skipped"] == 0
    assert spool["oldest_ts_ms"] == reading(0).ts_ms
    assert digest(state / "spool.db") == before


def test_peek_tells_an_unclean_stop_and_refuses_a_foreign_file(tmp_path, make_spool):
    path = tmp_path / "state" / "spool.db"
    sp = make_spool(path)
    sp.append(readings(3))
    sp.commit()
    crash(sp)
    assert Spool.peek(path).clean_shutdown is False
    other = tmp_path / "not-a-spool.db"
    other.write_bytes(b"garbage" * 100)
    with pytest.raises(SpoolError, match="cannot read"):
        Spool.peek(other)
