"""The emulator's Device Shadow service against AWS's own IotShadowClientV2 on awscrt MQTT5."""

from __future__ import annotations

import json
import queue

import pytest
from awsiot import ServiceStreamOptions, V2ServiceException, iotshadow

from emulator.admin import AdminRequestError

T = 10  # seconds for any single round trip


def _rejected(fut) -> iotshadow.V2ErrorResponse:
    with pytest.raises(V2ServiceException) as info:
        fut.result(T)
    err = info.value.modeled_error
    assert isinstance(err, iotshadow.V2ErrorResponse), info.value
    return err


def _stream(open_fn, request):
    events: queue.Queue = queue.Queue()
    subscribed: queue.Queue = queue.Queue()
    stream = open_fn(
        request,
        ServiceStreamOptions(
            incoming_event_listener=events.put,
            subscription_status_listener=subscribed.put,
            deserialization_failure_listener=events.put,  # surfaces as a wrong event in the test
        ),
    )
    stream.open()
    status = subscribed.get(timeout=T)
    assert status.error is None, status
    events.stream = stream  # a stream closes when garbage-collected: keep it as long as its queue
    return events


def test_get_missing_shadow_is_404(device):
    err = _rejected(device.shadow.get_shadow(iotshadow.GetShadowRequest(thing_name=device.thing)))
    assert err.code == 404
    assert err.message == f"No shadow exists with name: '{device.thing}'"
    assert err.client_token  # the SDK's correlation token came back


def test_update_get_delta_documents_and_versions(device):
    sh = device.shadow
    deltas = _stream(sh.create_shadow_delta_updated_stream,
                        iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=device.thing))
    docs = _stream(sh.create_shadow_updated_stream,
                      iotshadow.ShadowUpdatedSubscriptionRequest(thing_name=device.thing))

    r1 = sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing,
        state=iotshadow.ShadowState(desired={"interval_s": 5, "alarm": {"high": 50, "low": 10}, "ids": [1, 2]}),
    )).result(T)
    assert r1.version == 1
    assert r1.state.desired["interval_s"] == 5
    assert r1.metadata.desired["ids"] == [{"timestamp": pytest.approx(r1.timestamp.timestamp(), abs=2)}] * 2

    d1 = deltas.get(timeout=T)
    assert d1.version == 1 and d1.state == {"interval_s": 5, "alarm": {"high": 50, "low": 10}, "ids": [1, 2]}
    assert set(d1.metadata) == {"interval_s", "alarm", "ids"}
    doc1 = docs.get(timeout=T)
    assert doc1.previous is None and doc1.current.version == 1

    # reported catches up partly: delta keeps only what still differs, with the path from the root
    r2 = sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing,
        state=iotshadow.ShadowState(reported={"interval_s": 5, "alarm": {"high": 50, "low": 5}, "ids": [1]}),
        version=1,
    )).result(T)
    assert r2.version == 2 and r2.state.desired is None
    d2 = deltas.get(timeout=T)
    assert d2.version == 2 and d2.state == {"alarm": {"low": 10}, "ids": [1, 2]}
    doc2 = docs.get(timeout=T)
    assert doc2.previous.version == 1 and doc2.current.state.reported["ids"] == [1]

    got = sh.get_shadow(iotshadow.GetShadowRequest(thing_name=device.thing)).result(T)
    assert got.version == 2
    assert got.state.delta == {"alarm": {"low": 10}, "ids": [1, 2]}
    assert got.state.reported["alarm"] == {"high": 50, "low": 5}

    # stale version -> 409, nothing changes
    err = _rejected(sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(reported={"x": 1}), version=1)))
    assert (err.code, err.message) == (409, "Version conflict")

    # null deletes a key, arrays replace whole, a null section clears it
    sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing,
        state=iotshadow.ShadowState(desired={"alarm": {"low": None}, "ids": [1]}),
    )).result(T)
    sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(reported_is_nullable=True, reported=None),
    )).result(T)
    got = sh.get_shadow(iotshadow.GetShadowRequest(thing_name=device.thing)).result(T)
    assert got.version == 4
    assert got.state.desired == {"interval_s": 5, "alarm": {"high": 50}, "ids": [1]}
    assert got.state.reported is None
    assert got.state.delta == got.state.desired

    # delete keeps the version; the next update continues it
    deleted = sh.delete_shadow(iotshadow.DeleteShadowRequest(thing_name=device.thing)).result(T)
    assert deleted.version == 4
    assert _rejected(sh.get_shadow(iotshadow.GetShadowRequest(thing_name=device.thing))).code == 404
    assert _rejected(sh.delete_shadow(iotshadow.DeleteShadowRequest(thing_name=device.thing))).code == 404
    again = sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(reported={"fresh": True}))).result(T)
    assert again.version == 5


def test_named_shadow_is_separate_from_classic(device):
    sh = device.shadow
    deltas = _stream(sh.create_named_shadow_delta_updated_stream,
                        iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=device.thing,
                                                                            shadow_name="config"))
    r = sh.update_named_shadow(iotshadow.UpdateNamedShadowRequest(
        thing_name=device.thing, shadow_name="config", state=iotshadow.ShadowState(desired={"mode": "fast"}),
    )).result(T)
    assert r.version == 1
    assert deltas.get(timeout=T).state == {"mode": "fast"}
    got = sh.get_named_shadow(iotshadow.GetNamedShadowRequest(thing_name=device.thing, shadow_name="config")).result(T)
    assert got.state.desired == {"mode": "fast"}
    assert _rejected(sh.get_shadow(iotshadow.GetShadowRequest(thing_name=device.thing))).code == 404
    err = _rejected(sh.get_named_shadow(iotshadow.GetNamedShadowRequest(thing_name=device.thing, shadow_name="other")))
    assert (err.code, err.message) == (404, "No shadow exists with name: 'other'")
    assert sh.delete_named_shadow(iotshadow.DeleteNamedShadowRequest(
        thing_name=device.thing, shadow_name="config")).result(T).version == 1


def test_size_and_depth_limits(device):
    sh = device.shadow
    err = _rejected(sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(desired={"blob": "x" * 9000}))))
    assert (err.code, err.message) == (413, "The payload exceeds the maximum size allowed")
    # the limit applies to the merged document, not the request
    sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(desired={"a": "x" * 5000}))).result(T)
    err = _rejected(sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(reported={"b": "y" * 5000}))))
    assert err.code == 413
    deep = {"l2": {"l3": {"l4": {"l5": {"l6": {"leaf": 1}}}}}}  # reported node = level 1, so 6 levels
    sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(reported=deep))).result(T)
    too_deep = {"l2": {"l3": {"l4": {"l5": {"l6": {"l7": {"leaf": 1}}}}}}}
    err = _rejected(sh.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(reported=too_deep))))
    assert (err.code, err.message) == (400, "JSON contains too many levels of nesting; maximum is 6")
    got = sh.get_shadow(iotshadow.GetShadowRequest(thing_name=device.thing)).result(T)
    assert got.version == 2  # rejected updates changed nothing


def _raw(device, suffix: str, payload: bytes) -> dict:
    topic = f"$aws/things/{device.thing}/shadow/{suffix}"
    device.mqtt.subscribe(topic + "/rejected", topic + "/accepted")
    device.mqtt.publish(topic, payload)
    msg = device.mqtt.expect(timeout=T)
    return {"topic": msg.topic, **json.loads(msg.payload)}


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        (b"{not json", 400, "Invalid JSON"),
        (b"[1, 2]", 400, "Invalid JSON"),
        (b"\xff\xfe", 415, "Unsupported documented encoding; supported encoding is UTF-8"),
        (b'{"clientToken": "c"}', 400, "Missing required node: state"),
        (b'{"state": 5, "clientToken": "c"}', 400, "State node must be an object"),
        (b'{"state": {"delta": {"a": 1}}, "clientToken": "c"}', 400, "State contains an invalid node: 'delta'"),
        (b'{"state": {"desired": [1]}, "clientToken": "c"}', 400, "Desired node must be an object"),
        (b'{"state": {"reported": "x"}, "clientToken": "c"}', 400, "Reported node must be an object"),
        (b'{"state": {"reported": {"a": 1}}, "version": "7", "clientToken": "c"}', 400, "Invalid version"),
        (b'{"state": {"reported": {"a": 1}}, "clientToken": "' + b"k" * 65 + b'"}', 400, "Invalid clientToken"),
        (b'{"state": {"reported": {"a": [1, null]}}, "clientToken": "c"}', 400, "Invalid JSON"),
    ],
)
def test_bad_update_payloads_are_rejected_exactly(device, payload, code, message):
    reply = _raw(device, "update", payload)
    assert reply["topic"].endswith("/update/rejected")
    assert (reply["code"], reply["message"]) == (code, message)
    assert isinstance(reply["timestamp"], int)
    if b'"clientToken": "c"' in payload:
        assert reply["clientToken"] == "c"
    # and the service keeps serving: a good request right after is accepted
    ok = device.shadow.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=device.thing, state=iotshadow.ShadowState(reported={"ok": True}))).result(T)
    assert ok.state.reported == {"ok": True}


def test_admin_set_desired_publishes_delta(device, admin):
    deltas = _stream(device.shadow.create_shadow_delta_updated_stream,
                        iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=device.thing))
    doc = admin.shadow_set_desired(device.thing, {"interval_s": 2})
    assert doc["version"] == 1 and doc["state"]["delta"] == {"interval_s": 2}
    event = deltas.get(timeout=T)
    assert event.state == {"interval_s": 2} and event.version == 1
    assert admin.shadow_get(device.thing)["state"]["desired"] == {"interval_s": 2}
    with pytest.raises(AdminRequestError) as info:
        admin.shadow_set_desired(device.thing, [1, 2])
    assert (info.value.code, info.value.message) == ("400", "Desired node must be an object")
    with pytest.raises(AdminRequestError) as info:
        admin.shadow_get(device.thing, shadow="nope")
    assert info.value.code == "404"
