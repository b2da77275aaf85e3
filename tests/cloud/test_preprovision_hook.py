"""The pre-provisioning hook as a pure function: its rules, its refusal of hostile events, and its
allowlist files. (AWS backends: test_preprovision_aws.py; over MQTT: tests/emulator_provisioning.)"""

from __future__ import annotations

import json
import logging
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.preprovision.allowlist import AllowlistError, FileAllowlist, OpenAllowlist, parse
from cloud.preprovision.hook import CERT_ID_RE, HookConfig, decide, respond
from cloud.preprovision.ports import AllowEntry, LookupFailed, ThingView

CLAIM = "c" * 64
DEV_A = "a" * 64
DEV_B = "b" * 64
NEW = "e" * 64
CONFIG = HookConfig(claim_certificate_ids=frozenset({CLAIM}))


class Things:
    def __init__(self, things: dict[str, ThingView] | None = None, fail: bool = False) -> None:
        self.things = things or {}
        self.fail = fail

    def describe(self, thing_name: str) -> ThingView | None:
        if self.fail:
            raise LookupFailed("registry unreachable")
        return self.things.get(thing_name)


class Listed:
    def __init__(self, entries: dict[str, AllowEntry], fail: bool = False) -> None:
        self.entries = entries
        self.fail = fail

    def lookup(self, serial: str) -> AllowEntry | None:
        if self.fail:
            raise LookupFailed("table unreachable")
        return self.entries.get(serial)


FLEET = Things({
    "methane-A1": ThingView(frozenset({DEV_A}), {"site": "north"}),
    "methane-B2": ThingView(frozenset({DEV_B}), {"site": "south"}),
})
ALLOW = Listed({"A1": AllowEntry("A1"), "B2": AllowEntry("B2"), "N3": AllowEntry("N3"),
                "P4": AllowEntry("P4", "west")})


def event(requester: str, serial: str | None, **params: str) -> dict:
    parameters = dict(params)
    if serial is not None:
        parameters["SerialNumber"] = serial
    return {"claimCertificateId": requester, "certificateId": NEW, "certificatePem": "-----BEGIN CERTIFICATE-----",
            "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/methane-fleet",
            "clientId": "dev-1", "parameters": parameters}


def test_claim_certificate_creates_a_new_allowlisted_thing():
    d = decide(event(CLAIM, "N3", SiteId="east"), CONFIG, FLEET, ALLOW)
    assert d.allow and d.thing_name == "methane-N3"
    assert d.response() == {"allowProvisioning": True, "parameterOverrides": {}}


def test_allowlist_entry_pins_the_site():
    d = decide(event(CLAIM, "P4", SiteId="somewhere-else"), CONFIG, FLEET, ALLOW)
    assert d.response() == {"allowProvisioning": True, "parameterOverrides": {"SiteId": "west"}}


def test_serial_not_on_allowlist_is_denied(caplog):
    caplog.set_level(logging.INFO, logger="cloud.preprovision.hook")
    d = decide(event(CLAIM, "Z9"), CONFIG, FLEET, ALLOW)
    assert not d.allow and "not on the allowlist" in d.reason
    rec = caplog.records[-1]
    assert rec.levelno == logging.WARNING and "not on the allowlist" in rec.getMessage()
    assert rec.allow is False and rec.thing_name == "methane-Z9" and rec.claimCertificateId == CLAIM
    assert "BEGIN CERTIFICATE" not in caplog.text  # the PEM is never logged


def test_claim_certificate_may_not_take_over_an_existing_thing():
    d = decide(event(CLAIM, "A1"), CONFIG, FLEET, ALLOW)
    assert d.response() == {"allowProvisioning": False, "parameterOverrides": {}}
    assert "already exists" in d.reason


def test_foreign_device_may_not_register_another_thing():
    d = decide(event(DEV_A, "B2"), CONFIG, FLEET, ALLOW)
    assert not d.allow and "not attached to this thing" in d.reason


def test_device_certificate_may_not_create_a_new_thing():
    d = decide(event(DEV_A, "N3"), CONFIG, FLEET, ALLOW)
    assert not d.allow and "claim certificate" in d.reason


def test_rotation_by_an_attached_certificate_keeps_the_recorded_site():
    d = decide(event(DEV_A, "A1", SiteId="south"), CONFIG, FLEET, ALLOW)
    assert d.allow and "rotation" in d.reason
    assert d.response()["parameterOverrides"] == {"SiteId": "north"}


def test_rotation_does_not_need_the_allowlist():
    d = decide(event(DEV_A, "A1"), CONFIG, FLEET, Listed({}, fail=True))
    assert d.allow


def test_no_claim_certificate_configured_means_no_new_things():
    d = decide(event(CLAIM, "N3"), HookConfig(claim_certificate_ids=frozenset()), FLEET, ALLOW)
    assert not d.allow


@pytest.mark.parametrize("things, allow", [(Things(fail=True), ALLOW), (FLEET, Listed({}, fail=True))])
def test_a_port_that_cannot_answer_denies(things, allow):
    d = decide(event(CLAIM, "N3"), CONFIG, things, allow)
    assert not d.allow and "lookup failed" in d.reason


@pytest.mark.parametrize("bad, fragment", [
    ("not an object", "not a JSON object"),
    ({**event(CLAIM, "N3"), "claimCertificateId": "C" * 64}, "claimCertificateId"),
    ({**event(CLAIM, "N3"), "certificateId": None}, "certificateId"),
    ({**event(CLAIM, "N3"), "parameters": ["SerialNumber", "N3"]}, "parameters"),
    ({**event(CLAIM, "N3"), "parameters": {"SerialNumber": 3}}, "parameters"),
    (event(CLAIM, None), "SerialNumber"),
    (event(CLAIM, "../A1"), "SerialNumber"),
    (event(CLAIM, "A1\n"), "SerialNumber"),
    (event(CLAIM, "N3", SiteId="north/+"), "SiteId"),
    (event(CLAIM, "N3", SiteId="*"), "SiteId"),
])
def test_malformed_events_are_denied_with_the_reason(bad, fragment):
    d = decide(bad, CONFIG, FLEET, ALLOW)
    assert not d.allow and fragment in d.reason


def test_thing_name_format_follows_the_template():
    cfg = HookConfig(claim_certificate_ids=frozenset({CLAIM}), thing_name_format="gw-{serial}")
    assert decide(event(CLAIM, "N3"), cfg, FLEET, ALLOW).thing_name == "gw-N3"
    # The same serial under another naming scheme is a different, new thing.
    assert decide(event(CLAIM, "A1"), cfg, FLEET, ALLOW).allow


# -- hostile events -------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
cert_ids = st.sampled_from([CLAIM, DEV_A, DEV_B, NEW]) | st.text(max_size=70) | json_values
serials = st.sampled_from(["A1", "B2", "N3", "P4", "Z9", "", "A1 ", "méthane", "A" * 65]) | st.text(max_size=70)
params = st.dictionaries(st.sampled_from(["SerialNumber", "SiteId", "Model"]) | st.text(max_size=8),
                         serials | json_values, max_size=5) | json_values
events = st.fixed_dictionaries({}, optional={
    "claimCertificateId": cert_ids, "certificateId": cert_ids, "parameters": params,
    "clientId": json_values, "templateArn": json_values, "certificatePem": json_values,
}) | json_values


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ev=events)
def test_hostile_events_never_crash_and_only_the_rules_allow(ev):
    out = respond(ev, CONFIG, FLEET, ALLOW)
    assert set(out) == {"allowProvisioning", "parameterOverrides"}
    assert isinstance(out["allowProvisioning"], bool)
    overrides = out["parameterOverrides"]
    assert isinstance(overrides, dict) and all(isinstance(v, str) for v in overrides.values())
    json.dumps(out)
    if not out["allowProvisioning"]:
        assert overrides == {}
        return
    # Allowed: exactly one of the two rules holds.
    requester = ev["claimCertificateId"]
    serial = ev["parameters"]["SerialNumber"]
    thing = FLEET.describe(f"methane-{serial}")
    assert CERT_ID_RE.fullmatch(ev["certificateId"])
    if thing is None:
        assert requester == CLAIM and ALLOW.lookup(serial) is not None
    else:
        assert requester != CLAIM and requester in thing.principals
        assert overrides == {"SiteId": thing.attributes["site"]}


# -- allowlist files --------------------------------------------------------------------------------
def test_json_and_csv_allowlists(tmp_path):
    j = tmp_path / "serials.json"
    j.write_text(json.dumps(["A1", {"serial": "B2", "site": "north-7"}]))
    c = tmp_path / "serials.csv"
    c.write_text("serial,site\nA1,\nB2,north-7\n\n")
    for path in (j, c):
        allow = FileAllowlist(path)
        assert allow.lookup("A1") == AllowEntry("A1")
        assert allow.lookup("B2") == AllowEntry("B2", "north-7")
        assert allow.lookup("C3") is None
    assert OpenAllowlist().lookup("anything") == AllowEntry("anything")


def test_file_allowlist_rereads_on_change_and_fails_closed_when_broken(tmp_path):
    path = tmp_path / "serials.json"
    path.write_text('["A1"]')
    allow = FileAllowlist(path)
    assert allow.lookup("B2") is None
    path.write_text('["A1", "B2"]')
    os.utime(path, ns=(1, 1))  # a new mtime even within the filesystem's timestamp granularity
    assert allow.lookup("B2") == AllowEntry("B2")
    path.write_text("[not json")
    with pytest.raises(LookupFailed, match="not valid JSON"):
        allow.lookup("A1")
    path.unlink()
    with pytest.raises(LookupFailed):
        allow.lookup("A1")


@pytest.mark.parametrize("name, data, fragment", [
    ("s.json", b'{"A1": 1}', "JSON array"),
    ("s.json", b'["A 1"]', "serial 'A 1'"),
    ("s.json", b'[{"serial": "A1", "colour": "red"}]', "unknown keys"),
    ("s.json", b'[{"serial": "A1", "site": "a/b"}]', "site 'a/b'"),
    ("s.json", b'[{"serial": "A1", "site": "x"}, {"serial": "A1", "site": "y"}]', "listed twice"),
    ("s.csv", b"id,site\nA1,x\n", "'serial' column"),
    ("s.csv", b"serial\nA1;B2\n", "line 2"),
    ("s.txt", b"A1\n", ".json or .csv"),
    ("s.json", b"\xff\xfe", "UTF-8"),
])
def test_bad_allowlist_files_name_the_problem(name, data, fragment):
    with pytest.raises(AllowlistError, match=None) as exc:
        parse(data, name)
    assert fragment in str(exc.value) and name in str(exc.value)


def test_missing_allowlist_file_is_an_error_at_start(tmp_path):
    with pytest.raises(AllowlistError, match="No such file"):
        FileAllowlist(tmp_path / "nope.json")
