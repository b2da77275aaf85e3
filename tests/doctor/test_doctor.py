"""methane-agent doctor against the local emulator: all pass, then each check made to fail once."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.doctor import local
from agent.doctor.report import Result
from tests.devices.dynament import DynamentDevice
from tests.devices.pty_host import Fault, PtyHost
from tests.doctor.conftest import doctor, lines_by_name

ALL = ["config", "identity", "clock", "dns", "tls", "mqtt", "sensor sim-1", "disk"]


def test_everything_passes_against_the_emulator(write_config):
    r = doctor(write_config())
    got = lines_by_name(r.stdout)
    assert list(got) == ALL, r.stdout + r.stderr
    # The test machine's clock may be unsynchronised: that is a warning, never a failure.
    assert {k: v for k, v in got.items() if k != "clock"} == dict.fromkeys(set(ALL) - {"clock"}, "PASS")
    assert got["clock"] in ("PASS", "WARN")
    assert r.returncode == 0, r.stdout
    assert "round trip on dt/methane/site-1/gw-0001/doctor" in r.stdout


def test_json_output(write_config):
    r = doctor(write_config(), "--json", "--skip", "sensors")
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["failed"] == 0
    assert [c["name"] for c in doc["checks"]] == ["config", "identity", "clock", "dns", "tls", "mqtt", "disk"]


def test_invalid_config_fails_and_stops(write_config, tmp_path):
    path = write_config(connection={"port": 70000})
    r = doctor(path)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [r.stdout.strip()]  # one line: nothing else can be judged
    assert r.stdout.startswith("FAIL config:") and "connection.port" in r.stdout
    assert "(fix: methane-agent config validate" in r.stdout


def test_group_readable_key_fails_identity(write_config, emulator, tmp_path):
    key = tmp_path / "loose.key"
    key.write_bytes(Path(emulator.info.device.key_file).read_bytes())
    key.chmod(0o644)
    r = doctor(write_config(connection={"key_file": str(key)}))
    got = lines_by_name(r.stdout)
    assert r.returncode == 1
    assert got["identity"] == "FAIL" and "mode 0644" in r.stdout and f"chmod 600 {key}" in r.stdout
    assert got["tls"] == got["mqtt"] == "FAIL" and "not attempted: no usable identity" in r.stdout


def test_unknown_host_fails_dns(write_config):
    r = doctor(write_config(connection={"endpoint": "no-such-endpoint.invalid"}))
    got = lines_by_name(r.stdout)
    assert got["dns"] == "FAIL" and "does not resolve" in r.stdout
    assert "not attempted: endpoint does not resolve" in r.stdout
    assert r.returncode == 1


def _other_ca(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not The Emulator CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_wrong_ca_fails_tls(write_config, tmp_path):
    r = doctor(write_config(connection={"ca_file": str(_other_ca(tmp_path))}), "--skip", "sensors")
    got = lines_by_name(r.stdout)
    assert got["tls"] == "FAIL" and "not trusted" in r.stdout and "connection.ca_file" in r.stdout
    assert got["mqtt"] == "FAIL"
    assert r.returncode == 1


def test_broker_stopped_fails_tls_and_mqtt(write_config, emulator):
    path = write_config()
    emulator.broker.stop()
    r = doctor(path, "--skip", "sensors")
    got = lines_by_name(r.stdout)
    assert got["dns"] == "PASS"
    assert got["tls"] == "FAIL" and "refused" in r.stdout.lower()
    assert got["mqtt"] == "FAIL"
    assert r.returncode == 1


def test_round_trip_on_a_topic_the_acl_denies_fails_mqtt(write_config):
    r = doctor(write_config(), "--skip", "sensors", "--topic", "dt/methane/{site}/someone-else/doctor")
    got = lines_by_name(r.stdout)
    assert got["tls"] == "PASS"
    assert got["mqtt"] == "FAIL", r.stdout
    assert r.returncode == 1


DYNAMENT = (
    '[[sensors]]\nid = "ch4"\ndriver = "dynament"\n'
    'settings = {{ port = "{port}", unit = "ppm", warmup_s = 0, timeout_s = 0.5 }}\n'
)


def test_missing_serial_device_fails(write_config, tmp_path):
    r = doctor(write_config(sensors=DYNAMENT.format(port=tmp_path / "ttyUSB9")), "--skip", "mqtt")
    got = lines_by_name(r.stdout)
    assert got["sensor ch4"] == "FAIL" and "does not exist" in r.stdout
    assert r.returncode == 1


def test_serial_device_answering_passes_and_silent_fails(write_config, tmp_path):
    host = PtyHost(DynamentDevice(reading=1234.0), link=tmp_path / "ttyUSB0").start()
    try:
        r = doctor(write_config(sensors=DYNAMENT.format(port=host.port)), "--skip", "mqtt")
        got = lines_by_name(r.stdout)
        assert got["sensor ch4"] == "PASS", r.stdout + r.stderr
        host.device.fault = Fault.SILENT
        r = doctor(write_config(sensors=DYNAMENT.format(port=host.port)), "--skip", "mqtt")
        assert lines_by_name(r.stdout)["sensor ch4"] == "FAIL", r.stdout
        assert r.returncode == 1
    finally:
        host.vanish()


def test_tiny_disk_headroom_fails(write_config):
    r = doctor(write_config(spool={"min_free_disk_bytes": 10**18}), "--skip", "mqtt")
    got = lines_by_name(r.stdout)
    assert got["disk"] == "FAIL" and "spool.min_free_disk_bytes" in r.stdout
    assert r.returncode == 1


# --- checks whose failure cannot be staged against a live machine are driven through their inputs


def _cert(emulator) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(emulator.info.device.cert_file).read_bytes())


def test_certificate_expiry(write_config, emulator):
    from agent import config as cfg

    creds = local.Credentials(cfg.load(write_config()))
    cert = _cert(emulator)
    soon = cert.not_valid_after_utc - dt.timedelta(days=10)
    later = cert.not_valid_after_utc + dt.timedelta(days=2)
    assert local.check_identity(creds, now=soon)[0].status == "WARN"
    r = local.check_identity(creds, now=later)[0]
    assert r.status == "FAIL" and "expired" in r.detail


def test_key_of_another_certificate_fails(write_config, emulator, tmp_path):
    from agent import config as cfg

    key = tmp_path / "admin.key"
    key.write_bytes(Path(emulator.info.admin_key_file).read_bytes())
    key.chmod(0o600)
    creds = local.Credentials(cfg.load(write_config(connection={"key_file": str(key)})))
    r = local.check_identity(creds)[0]
    assert r.status == "FAIL" and "is not the key of" in r.detail


def test_clock_from_timedatectl(tmp_path, emulator):
    fake = tmp_path / "timedatectl"
    fake.write_text("#!/bin/sh\necho no\n")
    fake.chmod(0o755)
    state = local.clock_state(timedatectl=str(fake), flag_file=tmp_path / "none")
    assert state == (False, "timedatectl NTPSynchronized")
    assert local.check_clock(None, state).status == "WARN"
    fake.write_text("#!/bin/sh\necho yes\n")
    assert local.check_clock(None, local.clock_state(timedatectl=str(fake))).status == "PASS"
    # No timedatectl answer (systemd not running): the timesyncd flag file, then adjtimex.
    flag = tmp_path / "synchronized"
    flag.touch()
    assert local.clock_state(timedatectl=None, flag_file=flag) == (True, str(flag))
    unknown = local.clock_state(timedatectl=None, flag_file=tmp_path / "none", adjtimex=lambda: None)
    assert local.check_clock(None, unknown).status == "WARN"
    # A clock before the certificate's notBefore (a Pi booted at 1970): TLS cannot work.
    cert = _cert(emulator)
    r = local.check_clock(cert, (True, "x"), now=cert.not_valid_before_utc - dt.timedelta(days=1))
    assert r.status == "FAIL" and "TLS will fail" in r.detail


def test_result_line_is_one_line():
    r = Result("FAIL", "x", "a\nb", "do\nthis")
    assert r.line() == "FAIL x: a b (fix: do this)"
    assert Result("PASS", "x", "fine", "ignored").line() == "PASS x: fine"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a second user to own the key")
def test_key_owned_by_someone_else_fails(write_config, emulator, tmp_path):
    key = tmp_path / "other.key"
    key.write_bytes(Path(emulator.info.device.key_file).read_bytes())
    key.chmod(0o600)
    os.chown(key, 4321, 4321)
    from agent import config as cfg

    r = local.check_identity(local.Credentials(cfg.load(write_config(connection={"key_file": str(key)}))))[0]
    assert r.status == "FAIL" and "owned by uid 4321" in r.detail
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
