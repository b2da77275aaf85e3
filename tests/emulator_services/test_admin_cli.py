"""``methane-agent emulator shadow|job …`` against a running emulator, and state surviving an
emulator restart on the same state dir."""

from __future__ import annotations

import json

from agent.cli import main
from emulator import Emulator
from emulator.admin import Admin
from emulator.services.device_services import DeviceServices


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_worked_admin_session(services_emulator, capsys, tmp_path):
    sd = str(services_emulator.state_dir)
    rc, out, err = _cli(capsys, "emulator", "shadow", "get", "--state-dir", sd, "--thing", "cli-thing")
    assert rc == 1 and "404" in err and "cli-thing" in err

    rc, out, _ = _cli(capsys, "emulator", "shadow", "set-desired", "--state-dir", sd, "--thing", "cli-thing",
                      "--json-doc", '{"interval_s": 5}', "--json")
    assert rc == 0 and json.loads(out)["state"]["delta"] == {"interval_s": 5}
    rc, out, _ = _cli(capsys, "emulator", "shadow", "get", "--state-dir", sd, "--thing", "cli-thing",
                      "--shadow", "nope")
    assert rc == 1
    rc, _, err = _cli(capsys, "emulator", "shadow", "set-desired", "--state-dir", sd, "--thing", "cli-thing",
                      "--json-doc", "{bad")
    assert rc == 2 and "--json-doc" in err

    doc = tmp_path / "job.json"
    doc.write_text('{"action": "reboot"}')
    rc, out, _ = _cli(capsys, "emulator", "job", "create", "--state-dir", sd, "--document", str(doc),
                      "--thing", "cli-a", "--thing", "cli-b", "--job-id", "cli-job", "--timeout-minutes", "30",
                      "--json")
    assert rc == 0 and json.loads(out)["targets"] == ["cli-a", "cli-b"]
    rc, out, _ = _cli(capsys, "emulator", "job", "list", "--state-dir", sd)
    assert rc == 0 and "cli-job" in out and "QUEUED=2" in out
    rc, out, _ = _cli(capsys, "emulator", "job", "describe", "cli-job", "--thing", "cli-b", "--state-dir", sd,
                      "--json")
    assert rc == 0 and json.loads(out)["execution"]["status"] == "QUEUED"
    rc, out, _ = _cli(capsys, "emulator", "job", "cancel", "cli-job", "--state-dir", sd)
    assert rc == 0 and "CANCELED" in out
    rc, _, err = _cli(capsys, "emulator", "job", "cancel", "cli-job", "--state-dir", sd)
    assert rc == 1 and "InvalidStateTransition" in err

    missing = tmp_path / "missing.json"
    rc, _, err = _cli(capsys, "emulator", "job", "create", "--state-dir", sd, "--document", str(missing),
                      "--thing", "x")
    assert rc == 2 and str(missing) in err


def test_admin_without_running_emulator_says_so(tmp_path, capsys):
    rc, _, err = _cli(capsys, "emulator", "job", "list", "--state-dir", str(tmp_path))
    assert rc == 1 and "NotRunning" in err and "emulator serve" in err


def test_state_survives_emulator_restart(tmp_path):
    state = tmp_path / "emu"
    with Emulator(state, components=[DeviceServices()]):
        admin = Admin(state)
        admin.shadow_set_desired("persist", {"a": 1})
        admin.job_create({"x": 1}, ["persist"], job_id="keep")
    with Emulator(state, components=[DeviceServices()]):
        admin = Admin(state)
        assert admin.shadow_get("persist")["state"]["desired"] == {"a": 1}
        assert admin.job_describe("keep", "persist")["execution"]["status"] == "QUEUED"
        assert admin.shadow_set_desired("persist", {"b": 2})["version"] == 2
