"""The one config model: every error named by its key path, env overrides, CLI exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import config as cfg
from agent.merge_patch import merge_patch

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "agent.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


def test_example_config_is_valid_and_documents_every_key():
    conf = cfg.load(EXAMPLE, environ={})
    assert conf.sensors[0].driver == "simulated"
    text = EXAMPLE.read_text()
    # Every key of every section appears in the example file (commented or not).
    for section_name, section in cfg.AgentConfig.model_fields.items():
        assert section_name in text, section_name
        model = section.annotation
        fields = getattr(model, "model_fields", {})
        for key in fields:
            assert key in text, f"{section_name}.{key} is not documented in agent.example.toml"


def test_every_error_reported_with_its_key_path(tmp_path):
    p = write(
        tmp_path,
        """
state_dir = "s"
[uplink]
encoding = "xml"
bogus = 1
[connection]
keep_alive_s = 5
[[sensors]]
id = "a"
driver = "simulated"
settings = { seed = "x", nope = 1 }
[[sensors]]
id = "b"
driver = "no-such-driver"
""",
    )
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load(p, environ={})
    paths = dict(ei.value.errors)
    assert "uplink.encoding" in paths
    assert "uplink.bogus" in paths
    assert "connection.keep_alive_s" in paths
    assert "sensors[0].settings.seed" in paths
    assert "sensors[0].settings.nope" in paths
    assert "no-such-driver" in paths["sensors[1]"]


def test_relative_paths_resolve_against_the_file(tmp_path):
    p = write(tmp_path, 'state_dir = "state"\n[connection]\ncert_file = "c.pem"\n')
    conf = cfg.load(p, environ={})
    assert conf.state_dir == tmp_path / "state"
    assert conf.connection.cert_file == tmp_path / "c.pem"
    assert conf.spool_path == tmp_path / "state" / "spool.db"


def test_environment_overrides(tmp_path):
    p = write(tmp_path, EXAMPLE.read_text())
    env = {
        "METHANE_AGENT__UPLINK__ENCODING": "json",
        "METHANE_AGENT__SENSORS__0__INTERVAL_S": "5",
        "METHANE_AGENT__DEVICE__THING_NAME": "gw-9",
        "UNRELATED": "x",
    }
    conf = cfg.load(p, environ=env)
    assert conf.uplink.encoding == "json"
    assert conf.sensors[0].interval_s == 5
    assert conf.device.thing_name == "gw-9"


def test_environment_override_is_validated(tmp_path):
    p = write(tmp_path, EXAMPLE.read_text())
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load(p, environ={"METHANE_AGENT__UPLINK__BATCH_MAX_BYTES": "999999999"})
    assert dict(ei.value.errors).keys() == {"uplink.batch_max_bytes"}
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load(p, environ={"METHANE_AGENT__SENSORS__7__INTERVAL_S": "1"})
    assert "no such list entry" in str(ei.value)


def test_toml_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load(write(tmp_path, "state_dir = \n"), environ={})
    assert ei.value.errors[0][0] == "<toml>"
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load(tmp_path / "missing.toml", environ={})
    assert "file not found" in str(ei.value)


def test_duplicate_sensor_ids_and_alarm_order(tmp_path):
    p = write(
        tmp_path,
        """
[[sensors]]
id = "a"
driver = "simulated"
alarms = [{ quantity = "methane", warn = 10.0, alarm = 5.0 }]
""",
    )
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load(p, environ={})
    assert dict(ei.value.errors) == {
        "sensors[0].alarms[0]": "warn (10.0) must be below alarm (5.0) for a rising alarm"}
    p = write(tmp_path, '[[sensors]]\nid = "a"\ndriver = "simulated"\n[[sensors]]\nid = "a"\ndriver = "simulated"\n')
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load(p, environ={})
    assert "duplicate sensor id 'a'" in str(ei.value)


def test_merge_patch_semantics():
    base = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}
    assert merge_patch(base, {"a": None, "b": {"c": 9}, "e": [3]}) == {"b": {"c": 9, "d": 3}, "e": [3]}
    assert base == {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}  # input unchanged


def test_digest_changes_with_content():
    a = cfg.validate({})
    b = cfg.validate({"uplink": {"encoding": "json"}})
    assert a.digest() == cfg.validate({}).digest()
    assert a.digest() != b.digest()


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["state_dir", "device", "connection", "uplink", "spool", "sensors", "logging", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda children: (
                st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=4,
    )
)
def test_validate_never_raises_anything_but_config_error(data):
    try:
        cfg.validate(data)
    except cfg.ConfigError as exc:
        assert exc.errors and all(isinstance(p, str) and isinstance(r, str) for p, r in exc.errors)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60)


def test_cli_validate_exit_codes(tmp_path):
    ok = run_cli("config", "validate", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("config", "validate", str(write(tmp_path, '[uplink]\nencoding = "xml"\n')))
    assert bad.returncode == 2
    assert "uplink.encoding" in bad.stderr


def test_cli_show_prints_effective_config():
    out = run_cli("config", "show", str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["uplink"]["topic"] == "dt/methane/{site}/{thing}/telemetry"


@pytest.mark.parametrize("command", [("run", "--config"), ("config", "validate")])
def test_non_utf8_file_or_directory_is_a_clear_error_exit_2(tmp_path, command):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('state_dir = "/tmp/x"\n# café\n'.encode("latin-1"))
    for path, reason in ((latin1, "not UTF-8 text"), (tmp_path, "is a directory")):
        with pytest.raises(cfg.ConfigError) as ei:
            cfg.load(path, environ={})
        assert ei.value.errors[0][0] == "<file>" and reason in ei.value.errors[0][1]
        r = run_cli(*command, str(path))
        assert r.returncode == 2, r.stderr
        assert reason in r.stderr and "Traceback" not in r.stderr, r.stderr
