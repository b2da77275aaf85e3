"""Thing groups end to end: devices provisioned by claim land in the fleet's and their site's group
(the project's template), and ``emulator job create --thing-group`` targets a group's members with a
rollout rate and an abort threshold; ``job describe`` shows the per-status counts."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from emulator import Emulator
from emulator.services.device_services import DeviceServices
from emulator.services.jobs import JobsSettings
from provisioning.flow import Provisioner, Settings
from provisioning.session import Endpoint

SITES = {"sn-a1": "site-a", "sn-a2": "site-a", "sn-b1": "site-b"}


@pytest.fixture(scope="module")
def fleet_emulator(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups")
    emu = Emulator(root / "emulator", components=[DeviceServices(jobs_settings=JobsSettings(seconds_per_minute=60.0))],
                   fleet_provisioning=True)
    info = emu.start()
    try:
        for serial, site in SITES.items():
            (root / serial).mkdir()
            (root / serial / "serial").write_text(serial)
            assert info.claim_cert_file and info.claim_key_file and info.template_name
            Provisioner(Settings(
                state_dir=root / serial / "state", endpoint=Endpoint(info.endpoint, info.port, info.ca_file),
                claim_cert_file=info.claim_cert_file, claim_key_file=info.claim_key_file,
                template_name=info.template_name, parameters={"SiteId": site},
                serial_source=f"file:{root / serial / 'serial'}")).run()
        yield emu
    finally:
        emu.stop()


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_provisioned_things_join_fleet_and_site_groups(fleet_emulator, capsys):
    rc, out, _ = _cli(capsys, "emulator", "things", "--state-dir", str(fleet_emulator.state_dir), "--json")
    groups = {t["thingName"]: t["thingGroups"] for t in json.loads(out)}
    assert rc == 0
    assert groups["methane-sn-a1"] == ["methane-fleet", "site-a"]
    assert groups["methane-sn-b1"] == ["methane-fleet", "site-b"]
    rc, out, _ = _cli(capsys, "emulator", "groups", "--state-dir", str(fleet_emulator.state_dir))
    assert rc == 0 and out.splitlines() == ["methane-fleet  things=3", "site-a  things=2", "site-b  things=1"]


def test_job_for_a_group_with_rollout_and_abort(fleet_emulator, capsys, tmp_path):
    sd = str(fleet_emulator.state_dir)
    doc = tmp_path / "job.json"
    doc.write_text('{"action": "config-update", "params": {"patch": {}}}')
    rc, out, err = _cli(capsys, "emulator", "job", "create", "--state-dir", sd, "--document", str(doc),
                        "--thing-group", "methane-fleet", "--job-id", "fleet-1", "--max-per-minute", "1",
                        "--abort-failure-type", "FAILED", "--abort-threshold-percent", "30",
                        "--abort-min-executed", "1", "--json")
    assert rc == 0, err
    job = json.loads(out)
    assert job["targets"] == ["methane-sn-a1", "methane-sn-a2", "methane-sn-b1"]
    assert job["targetGroups"] == ["methane-fleet"]
    assert job["executionCounts"] == {"QUEUED": 1} and job["waitingForRollout"] == 2  # 1/min: only the first yet
    rc, out, _ = _cli(capsys, "emulator", "job", "describe", "fleet-1", "--state-dir", sd)
    assert rc == 0
    assert "targets: 3 (groups methane-fleet)" in out and "waiting for rollout: 2 (max 1/min)" in out
    assert "QUEUED       1" in out and "abort: FAILED >= 30.0% after 1 notified" in out

    rc, out, _ = _cli(capsys, "emulator", "job", "create", "--state-dir", sd, "--document", str(doc),
                      "--thing-group", "site-b", "--json")
    assert rc == 0 and json.loads(out)["targets"] == ["methane-sn-b1"]

    rc, _, err = _cli(capsys, "emulator", "job", "create", "--state-dir", sd, "--document", str(doc),
                      "--thing-group", "no-such-group")
    assert rc == 1 and "no-such-group" in err and "ResourceNotFound" in err
    rc, _, err = _cli(capsys, "emulator", "job", "create", "--state-dir", sd, "--document", str(doc),
                      "--thing-group", "site-a", "--abort-failure-type", "FAILED")
    assert rc == 2 and "go together" in err
    rc, _, err = _cli(capsys, "emulator", "job", "create", "--state-dir", sd, "--document", str(doc))
    assert rc == 2 and "--thing-group" in err
    rc, _, err = _cli(capsys, "emulator", "job", "create", "--state-dir", sd, "--document", str(doc),
                      "--thing-group", "site-a", "--max-per-minute", "5000")
    assert rc == 1 and "maximumPerMinute" in err
