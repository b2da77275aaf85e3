"""Pure service logic without a broker: the shadow document algebra, persistence across service
restarts, and hypothesis fuzzing of both ``handle`` entry points (never raise; every reply is a
well-formed accepted document or error document)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.services.jobs import JobsService
from emulator.services.shadow import ShadowService
from emulator.services.shadow_state import delta, delta_metadata, depth, merge, merge_metadata, stamp

NOW = 1_700_000_000.0


def test_merge_null_deletes_objects_recurse_arrays_replace():
    cur = {"a": 1, "o": {"x": 1, "y": 2}, "arr": [1, 2, 3]}
    assert merge(cur, {"a": None, "o": {"y": None, "z": 3}, "arr": [9]}) == {"o": {"x": 1, "z": 3}, "arr": [9]}
    assert merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert cur == {"a": 1, "o": {"x": 1, "y": 2}, "arr": [1, 2, 3]}  # input untouched


def test_delta_rules():
    desired = {"same": 1, "diff": 2, "missing": 3, "obj": {"k": 1, "j": 2}, "arr": [1, 2], "t": True}
    reported = {"same": 1, "diff": 5, "obj": {"k": 1, "j": 3}, "arr": [1], "only_reported": 1, "t": 1}
    assert delta(desired, reported) == {"diff": 2, "missing": 3, "obj": {"j": 2}, "arr": [1, 2], "t": True}
    assert delta({"n": 1}, {"n": 1.0}) == {}
    assert delta({}, {"x": 1}) == {}


def test_metadata_mirrors_state_and_leaf_to_object_starts_fresh():
    meta = merge_metadata({}, {}, {"a": 1, "l": [1, {"b": 2}]}, 10)
    assert meta == {"a": {"timestamp": 10}, "l": [{"timestamp": 10}, {"b": {"timestamp": 10}}]}
    meta2 = merge_metadata(meta, {"a": 1}, {"a": {"c": 3}}, 20)
    assert meta2["a"] == {"c": {"timestamp": 20}}
    assert delta_metadata({"a": {"c": 3}}, meta2) == {"a": {"c": {"timestamp": 20}}}
    assert stamp(None, 5) == {"timestamp": 5}


def test_depth_counts_objects_and_arrays():
    assert depth(1) == 0 and depth({}) == 1 and depth({"a": [{"b": 1}]}) == 3
    nested: dict = {}
    node = nested
    for _ in range(5000):  # iterative: no RecursionError
        node["n"] = {}
        node = node["n"]
    assert depth(nested) == 5001


def test_shadow_and_jobs_state_survive_a_restart(tmp_path):
    sh = ShadowService(tmp_path / "s.sqlite")
    sh.handle("$aws/things/t/shadow/update", b'{"state":{"desired":{"a":1}}}', NOW)
    sh.handle("$aws/things/t/shadow/delete", b"", NOW)
    sh.close()
    sh = ShadowService(tmp_path / "s.sqlite")
    out = sh.handle("$aws/things/t/shadow/update", b'{"state":{"reported":{"b":1}}}', NOW + 1)
    assert out[0].json()["version"] == 2  # delete kept the version across the restart
    sh.close()

    jobs = JobsService(tmp_path / "j.sqlite")
    jobs.create_job({"x": 1}, ["t"], NOW, job_id="j1")
    jobs.handle("$aws/things/t/jobs/start-next", b"{}", NOW)
    jobs.close()
    jobs = JobsService(tmp_path / "j.sqlite")
    out = jobs.handle("$aws/things/t/jobs/j1/get", b"", NOW)
    assert out[0].json()["execution"]["status"] == "IN_PROGRESS"
    jobs.close()


def test_shadow_version_restarts_after_48_hours(tmp_path):
    sh = ShadowService(tmp_path / "s.sqlite")
    sh.handle("$aws/things/t/shadow/update", b'{"state":{"desired":{"a":1}}}', NOW)
    sh.handle("$aws/things/t/shadow/delete", b"", NOW)
    out = sh.handle("$aws/things/t/shadow/update", b'{"state":{"desired":{"a":1}}}', NOW + 49 * 3600)
    assert out[0].json()["version"] == 1


def test_reported_only_delta_is_configurable(tmp_path):
    from emulator.services.shadow import ShadowSettings

    sh = ShadowService(tmp_path / "s.sqlite", ShadowSettings(delta_on_any_update=False))
    sh.handle("$aws/things/t/shadow/update", b'{"state":{"desired":{"a":1}}}', NOW)
    out = sh.handle("$aws/things/t/shadow/update", b'{"state":{"reported":{"b":1}}}', NOW)
    assert [o.topic.rsplit("/", 1)[1] for o in out] == ["accepted", "documents"]


# ---- fuzzing ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
request_docs = st.fixed_dictionaries(
    {},
    optional={
        "state": json_values | st.fixed_dictionaries(
            {}, optional={"desired": json_values, "reported": json_values, "delta": json_values}),
        "version": json_values,
        "clientToken": json_values,
        "status": st.sampled_from(["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED", "X"]) | json_values,
        "statusDetails": json_values,
        "expectedVersion": json_values,
        "executionNumber": json_values,
        "stepTimeoutInMinutes": json_values,
        "includeJobDocument": json_values,
        "includeJobExecutionState": json_values,
    },
)
payloads = st.binary(max_size=200) | request_docs.map(lambda d: json.dumps(d).encode())
shadow_topics = st.sampled_from(["get", "update", "delete", "update/accepted", "bogus"]).flatmap(
    lambda op: st.sampled_from([f"$aws/things/t1/shadow/{op}", f"$aws/things/t1/shadow/name/n1/{op}"]))
jobs_topics = st.sampled_from(
    ["get", "start-next", "j1/get", "$next/get", "j1/update", "j2/update", "x/y/z", "notify", "j1/update/accepted"]
).map(lambda s: f"$aws/things/t1/jobs/{s}")


def _well_formed(out, shadow: bool) -> None:
    for msg in out:
        doc = json.loads(msg.payload)
        assert isinstance(doc, dict)
        if msg.topic.endswith("/rejected"):
            assert isinstance(doc["message"], str) and doc["message"]
            assert isinstance(doc["code"], int if shadow else str)
            assert isinstance(doc["timestamp"], int)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(shadow_topics, payloads), min_size=1, max_size=6))
def test_fuzz_shadow_handle_never_raises(requests):
    sh = ShadowService(":memory:")
    try:
        for topic, payload in requests:
            out = sh.handle(topic, payload, NOW)
            _well_formed(out, shadow=True)
            if topic.endswith(("/get", "/update", "/delete")):
                assert out, topic  # every request gets an answer
    finally:
        sh.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(jobs_topics, payloads), min_size=1, max_size=6))
def test_fuzz_jobs_handle_never_raises(requests):
    jobs = JobsService(":memory:")
    jobs.create_job({"d": 1}, ["t1"], NOW, job_id="j1")
    try:
        for i, (topic, payload) in enumerate(requests):
            out = jobs.handle(topic, payload, NOW + i)
            _well_formed(out, shadow=False)
            jobs.tick(NOW + i * 1000)
    finally:
        jobs.close()
