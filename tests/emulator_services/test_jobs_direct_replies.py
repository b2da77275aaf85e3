"""Jobs replies reach the requesting connection without a subscription when the broker runs the
authz plugin (``Emulator(fleet_provisioning=True)``, as ``emulator serve`` does), as on IoT Core;
nobody else sees them; Shadow replies still need a subscription. Without the plugin replies are
published on their topics (see the plain cases at the end).

Absence is proven without sleeping: a client's messages arrive in order, so a second request's
reply is a fence; whatever the first request caused arrives before it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from emulator import Emulator
from emulator.admin import Admin
from tests.mqtt_client import MqttClient, Received

T = 10.0


def _token() -> str:
    return uuid.uuid4().hex


def _until(client: MqttClient, stop, timeout: float = T) -> list[Received]:
    """Messages up to and including the first for which ``stop(msg)`` holds."""
    got: list[Received] = []
    while True:
        msg = client.expect(timeout)
        got.append(msg)
        if stop(msg):
            return got


def _has_token(token: str):
    return lambda m: json.loads(m.payload).get("clientToken") == token


def _ask(client: MqttClient, topic: str, doc: dict | bytes) -> tuple[str, Received]:
    """Publish a request carrying a fresh clientToken (unless raw bytes) and take the next message,
    which must be its reply (each test consumes every reply it causes: a late one would otherwise
    reach the next test's connection, which has the same client id)."""
    if isinstance(doc, bytes):
        client.publish(topic, doc)
        return "", client.expect(T)
    token = _token()
    ack = client.publish(topic, json.dumps({**doc, "clientToken": token}))
    assert ack is not None and ack.reason_code in (0, 16), ack
    msg = client.expect(T)
    assert json.loads(msg.payload).get("clientToken") == token, (msg.topic, msg.payload)
    return token, msg


@pytest.fixture
def gw(services_emulator) -> Iterator[MqttClient]:
    """The emulator's ready-made device ``gw-0001``: client id = thing name, as the plugin's device
    policy requires. Nothing subscribed."""
    with MqttClient.for_device(services_emulator.info) as client:
        yield client


@pytest.mark.parametrize("services_emulator", ["fleet"], indirect=True)
class TestWithPlugin:
    def test_every_jobs_reply_arrives_without_subscription(self, services_emulator: Emulator, gw: MqttClient,
                                                           admin: Admin) -> None:
        base = "$aws/things/gw-0001/jobs"
        job = f"job-{uuid.uuid4().hex[:10]}"
        admin.job_create({"op": "direct"}, ["gw-0001"], job_id=job)
        direct_before = _runner(services_emulator).delivered_direct

        token, msg = _ask(gw, f"{base}/get", {})
        assert msg.topic == f"{base}/get/accepted"
        doc = json.loads(msg.payload)
        assert doc["clientToken"] == token
        assert job in [j["jobId"] for j in doc["inProgressJobs"] + doc["queuedJobs"]]

        # describe (accepted), then start this very job by updating it (accepted)
        token, msg = _ask(gw, f"{base}/{job}/get", {})
        assert msg.topic == f"{base}/{job}/get/accepted"
        assert json.loads(msg.payload)["execution"]["jobDocument"] == {"op": "direct"}
        token, msg = _ask(gw, f"{base}/{job}/update", {"status": "IN_PROGRESS", "expectedVersion": 1})
        assert msg.topic == f"{base}/{job}/update/accepted"
        assert json.loads(msg.payload)["clientToken"] == token

        # rejected: a stale version, then start-next with a bad statusDetails
        token, msg = _ask(gw, f"{base}/{job}/update", {"status": "IN_PROGRESS", "expectedVersion": 1})
        assert msg.topic == f"{base}/{job}/update/rejected"
        rej = json.loads(msg.payload)
        assert rej["code"] == "VersionMismatch" and rej["clientToken"] == token
        token, msg = _ask(gw, f"{base}/start-next", {"statusDetails": {"k": 5}})
        assert msg.topic == f"{base}/start-next/rejected"
        assert json.loads(msg.payload)["code"] == "InvalidRequest"

        # finish it; then describe says TerminalStateReached (rejected), start-next accepted
        _, msg = _ask(gw, f"{base}/{job}/update", {"status": "SUCCEEDED"})
        assert msg.topic == f"{base}/{job}/update/accepted"
        _, msg = _ask(gw, f"{base}/{job}/get", {})
        assert msg.topic == f"{base}/{job}/get/rejected"
        assert json.loads(msg.payload)["code"] == "TerminalStateReached"
        _, msg = _ask(gw, f"{base}/start-next", {})
        assert msg.topic == f"{base}/start-next/accepted"
        assert gw.messages.empty()

        assert _runner(services_emulator).delivered_direct - direct_before == 8

    def test_bad_request_rejected_without_subscription(self, gw: MqttClient) -> None:
        _, msg = _ask(gw, "$aws/things/gw-0001/jobs/get", b"{oops")
        assert msg.topic == "$aws/things/gw-0001/jobs/get/rejected"
        doc = json.loads(msg.payload)
        assert doc["code"] == "InvalidJson" and doc["message"] and isinstance(doc["timestamp"], int)
        _, msg = _ask(gw, "$aws/things/gw-0001/jobs/start-next/oops", b"{}")
        assert msg.topic == "$aws/things/gw-0001/jobs/start-next/oops/rejected"
        assert json.loads(msg.payload)["code"] == "InvalidTopic"

    def test_subscribed_requester_gets_one_copy(self, gw: MqttClient) -> None:
        topic = "$aws/things/gw-0001/jobs/get"
        gw.subscribe(topic + "/accepted", topic + "/rejected")
        first, msg = _ask(gw, topic, {})
        assert json.loads(msg.payload)["clientToken"] == first
        second = _token()
        gw.publish(topic, json.dumps({"clientToken": second}))
        rest = _until(gw, _has_token(second))
        assert len(rest) == 1, [m.topic for m in rest]  # no second copy of the first reply

    def test_other_subscribers_do_not_see_the_reply(self, services_emulator: Emulator, gw: MqttClient) -> None:
        """An admin connection may read every topic, the closest a test can come to 'any other
        subscriber or rule': it sees the device's requests but none of the replies."""
        base = "$aws/things/gw-0001/jobs"
        with MqttClient.for_admin(services_emulator.info) as spy:
            spy.subscribe(f"{base}/#")
            _, msg = _ask(gw, f"{base}/get", {})
            assert msg.topic == f"{base}/get/accepted"
            _, msg = _ask(gw, f"{base}/get", b"{oops")
            assert msg.topic == f"{base}/get/rejected"
            fence = _token()
            gw.publish(f"{base}/get", json.dumps({"clientToken": fence}))
            seen = _until(spy, lambda m: m.topic == f"{base}/get" and fence.encode() in m.payload)
            assert [m.topic for m in _until(gw, _has_token(fence))] == [f"{base}/get/accepted"]
        assert [m.topic for m in seen] == [f"{base}/get"] * 3
        assert seen[0].user_properties.get("emu-client-id") == "gw-0001"

    def test_shadow_replies_still_need_a_subscription(self, gw: MqttClient) -> None:
        """IoT Core answers shadow requests through the broker (reference §3.1, §9)."""
        topic = "$aws/things/gw-0001/shadow/name/direct-test/update"
        unseen = _token()
        gw.publish(topic, json.dumps({"state": {"reported": {"x": 1}}, "clientToken": unseen}))
        # The services answer in order, so once this Jobs reply is here the shadow reply is gone.
        _, msg = _ask(gw, "$aws/things/gw-0001/jobs/get", {})
        assert msg.topic == "$aws/things/gw-0001/jobs/get/accepted"
        gw.subscribe(topic + "/accepted", topic + "/rejected")
        fence = _token()
        gw.publish(topic, json.dumps({"state": {"reported": {"x": 2}}, "clientToken": fence}))
        got = _until(gw, _has_token(fence))
        assert [m.topic for m in got] == [topic + "/accepted"]


@pytest.mark.parametrize("services_emulator", ["plain"], indirect=True)
class TestWithoutPlugin:
    def test_replies_are_published_on_their_topics(self, services_emulator: Emulator, gw: MqttClient) -> None:
        """Without the plugin nothing names the requester or addresses one client: the requester
        must subscribe, and any subscriber of the topic sees the reply."""
        topic = "$aws/things/gw-0001/jobs/get"
        with MqttClient.for_admin(services_emulator.info) as spy:
            spy.subscribe(topic + "/accepted")
            unseen = _token()
            gw.publish(topic, json.dumps({"clientToken": unseen}))
            assert [m.topic for m in _until(spy, _has_token(unseen))] == [topic + "/accepted"]
            gw.subscribe(topic + "/accepted")
            fence, msg = _ask(gw, topic, {})
            assert json.loads(msg.payload)["clientToken"] == fence  # the first reply never reached gw
            assert [m.topic for m in _until(spy, _has_token(fence))] == [topic + "/accepted"]
        assert _runner(services_emulator).delivered_direct == 0


def _runner(emu: Emulator):
    from emulator.services.device_services import DeviceServices

    services = next(c for c in emu.components if isinstance(c, DeviceServices))
    assert services.runner is not None
    return services.runner
