"""The emulator's Jobs service against AWS's own IotJobsClientV2 on awscrt MQTT5, with jobs created
through the admin API of the running emulator.

Every test runs twice: against the plain broker (replies published on their topics) and against the
broker with the authz plugin, as ``emulator serve`` runs it (replies delivered to the requester
only; tests/emulator_services/test_jobs_direct_replies.py checks that part on the wire)."""

from __future__ import annotations

import json
import queue
import time
import uuid

import pytest
from awsiot import ServiceStreamOptions, V2ServiceException, iotjobs

from emulator.admin import AdminRequestError
from tests.eventually import eventually

T = 10
S = iotjobs.JobStatus

pytestmark = pytest.mark.parametrize("services_emulator", ["plain", "fleet"], indirect=True)


def _rejected(fut) -> iotjobs.V2ErrorResponse:
    with pytest.raises(V2ServiceException) as info:
        fut.result(T)
    err = info.value.modeled_error
    assert isinstance(err, iotjobs.V2ErrorResponse), info.value
    return err


def _stream(open_fn, thing_request):
    events: queue.Queue = queue.Queue()
    subscribed: queue.Queue = queue.Queue()
    stream = open_fn(thing_request, ServiceStreamOptions(
        incoming_event_listener=events.put, subscription_status_listener=subscribed.put,
        deserialization_failure_listener=events.put))
    stream.open()
    assert subscribed.get(timeout=T).error is None
    events.stream = stream  # keep the stream alive with its queue
    return events


def _job_id() -> str:
    return f"job-{uuid.uuid4().hex[:10]}"


def _update(device, job_id, status, **kw):
    return device.jobs.update_job_execution(
        iotjobs.UpdateJobExecutionRequest(thing_name=device.thing, job_id=job_id, status=status, **kw))


def test_pending_start_next_update_and_notifications(device, admin):
    jobs = device.jobs
    notify = _stream(jobs.create_job_executions_changed_stream,
                     iotjobs.JobExecutionsChangedSubscriptionRequest(thing_name=device.thing))
    notify_next = _stream(jobs.create_next_job_execution_changed_stream,
                          iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=device.thing))
    empty = jobs.get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=device.thing)).result(T)
    assert empty.in_progress_jobs == [] and empty.queued_jobs == []
    nothing = jobs.start_next_pending_job_execution(
        iotjobs.StartNextPendingJobExecutionRequest(thing_name=device.thing)).result(T)
    assert nothing.execution is None

    j1, j2 = _job_id(), _job_id()
    admin.job_create({"action": "reboot"}, [device.thing], job_id=j1)
    ev = notify.get(timeout=T)
    assert [s.job_id for s in ev.jobs[S.QUEUED]] == [j1]
    nxt = notify_next.get(timeout=T)
    assert nxt.execution.job_id == j1 and nxt.execution.job_document == {"action": "reboot"}
    admin.job_create({"action": "config-update"}, [device.thing], job_id=j2)
    assert [s.job_id for s in notify.get(timeout=T).jobs[S.QUEUED]] == [j1, j2]

    pending = jobs.get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=device.thing)).result(T)
    assert [s.job_id for s in pending.queued_jobs] == [j1, j2]
    assert pending.queued_jobs[0].version_number == 1

    started = jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
        thing_name=device.thing, status_details={"step": "download"}, step_timeout_in_minutes=30)).result(T)
    ex = started.execution
    assert (ex.job_id, ex.status, ex.version_number) == (j1, S.IN_PROGRESS, 2)
    assert ex.status_details == {"step": "download"} and ex.started_at is not None
    assert ex.job_document == {"action": "reboot"}

    # describe: by id and $next, with and without the document
    desc = jobs.describe_job_execution(
        iotjobs.DescribeJobExecutionRequest(thing_name=device.thing, job_id=j1)).result(T)
    assert desc.execution.status == S.IN_PROGRESS and desc.execution.job_document == {"action": "reboot"}
    desc = jobs.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
        thing_name=device.thing, job_id="$next", include_job_document=False)).result(T)
    assert desc.execution.job_id == j1 and desc.execution.job_document is None

    # optimistic locking
    err = _rejected(_update(device, j1, S.IN_PROGRESS, expected_version=1))
    assert err.code == iotjobs.RejectedErrorCode.VERSION_MISMATCH
    assert err.execution_state.version_number == 2 and err.execution_state.status == S.IN_PROGRESS
    err = _rejected(_update(device, j1, S.IN_PROGRESS, execution_number=99))
    assert err.code == iotjobs.RejectedErrorCode.RESOURCE_NOT_FOUND

    done = _update(device, j1, S.SUCCEEDED, expected_version=2, status_details={"step": "done"},
                   include_job_execution_state=True, include_job_document=True).result(T)
    assert done.execution_state.status == S.SUCCEEDED and done.execution_state.version_number == 3
    assert done.job_document == {"action": "reboot"}
    ev = notify.get(timeout=T)
    assert [s.job_id for s in ev.jobs[S.QUEUED]] == [j2] and S.IN_PROGRESS not in ev.jobs
    assert notify_next.get(timeout=T).execution.job_id == j2

    # terminal: no more updates, describe says TerminalStateReached
    err = _rejected(_update(device, j1, S.IN_PROGRESS))
    assert err.code == iotjobs.RejectedErrorCode.INVALID_STATE_TRANSITION
    assert err.execution_state.status == S.SUCCEEDED
    err = _rejected(jobs.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
        thing_name=device.thing, job_id=j1)))
    assert err.code == iotjobs.RejectedErrorCode.TERMINAL_STATE_REACHED

    # QUEUED -> REJECTED directly (a device refusing a bad document), then the queue is empty
    assert _update(device, j2, S.REJECTED).result(T) is not None
    assert notify.get(timeout=T).jobs == {}
    last = notify_next.get(timeout=T)
    assert last.execution is None
    assert admin.job_describe(j1)["status"] == "COMPLETED"


def test_not_found_and_invalid_requests(device):
    jobs = device.jobs
    err = _rejected(jobs.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
        thing_name=device.thing, job_id="no-such-job")))
    assert err.code == iotjobs.RejectedErrorCode.RESOURCE_NOT_FOUND
    err = _rejected(_update(device, "no-such-job", S.IN_PROGRESS))
    assert err.code == iotjobs.RejectedErrorCode.RESOURCE_NOT_FOUND
    err = _rejected(jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
        thing_name=device.thing, step_timeout_in_minutes=0)))
    assert err.code == iotjobs.RejectedErrorCode.INVALID_REQUEST
    assert "stepTimeoutInMinutes" in err.message


def _raw(device, suffix: str, payload: bytes) -> dict:
    topic = f"$aws/things/{device.thing}/jobs/{suffix}"
    device.mqtt.subscribe(topic + "/accepted", topic + "/rejected")
    device.mqtt.publish(topic, payload)
    msg = device.mqtt.expect(timeout=T)
    return {"topic": msg.topic, **json.loads(msg.payload)}


@pytest.mark.parametrize(
    ("suffix", "payload", "code"),
    [
        ("get", b"{oops", "InvalidJson"),
        ("get", b"\xc3\x28", "InvalidJson"),
        ("start-next", b'{"statusDetails": {"k": 5}, "clientToken": "c"}', "InvalidRequest"),
        ("start-next", b'{"statusDetails": "no", "clientToken": "c"}', "InvalidRequest"),
        ("j/update", b'{"clientToken": "c"}', "InvalidRequest"),
        ("j/update", b'{"status": "DONE", "clientToken": "c"}', "InvalidRequest"),
        ("j/update", b'{"status": "IN_PROGRESS", "expectedVersion": "1", "clientToken": "c"}', "InvalidRequest"),
        ("j/get", b'{"includeJobDocument": "yes", "clientToken": "c"}', "InvalidRequest"),
        ("start-next/oops", b"{}", "InvalidTopic"),
    ],
)
def test_bad_requests_get_the_documented_error(device, suffix, payload, code):
    reply = _raw(device, suffix, payload)
    assert reply["topic"].endswith("/rejected")
    assert reply["code"] == code and reply["message"]
    assert isinstance(reply["timestamp"], int)
    if b'"clientToken": "c"' in payload:
        assert reply["clientToken"] == "c"
    # the service still answers a good request afterwards
    ok = device.jobs.get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=device.thing)).result(T)
    assert ok.queued_jobs == []


def _wait_status(admin, job_id, thing, status, timeout=10.0) -> None:
    eventually(lambda: admin.job_describe(job_id, thing)["execution"]["status"] == status, timeout,
               what=lambda: f"{job_id}: {admin.job_describe(job_id, thing)['execution']}")


def test_step_timeout_times_out_and_minus_one_clears(device, admin):
    # in this module's emulator a timeout minute lasts 0.05 s
    j1 = _job_id()
    admin.job_create({"a": 1}, [device.thing], job_id=j1)
    device.jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
        thing_name=device.thing, step_timeout_in_minutes=2)).result(T)
    _wait_status(admin, j1, device.thing, "TIMED_OUT")
    err = _rejected(_update(device, j1, S.SUCCEEDED))
    assert err.code == iotjobs.RejectedErrorCode.INVALID_STATE_TRANSITION
    assert err.execution_state.status == S.TIMED_OUT

    j2 = _job_id()
    admin.job_create({"a": 2}, [device.thing], job_id=j2)
    # 40 "minutes" (2 s) leave room for the clearing update on a loaded machine: with 2 (0.1 s) the
    # timer sometimes fired before the second update arrived
    _update(device, j2, S.IN_PROGRESS, step_timeout_in_minutes=40).result(T)
    _update(device, j2, S.IN_PROGRESS, step_timeout_in_minutes=-1).result(T)  # clears the timer
    time.sleep(2.5)  # fifty timeout "minutes": it would have timed out by now
    assert admin.job_describe(j2, device.thing)["execution"]["status"] == "IN_PROGRESS"


def test_job_in_progress_timeout(device, admin):
    j = _job_id()
    admin.job_create({"a": 1}, [device.thing], job_id=j, timeout_minutes=3)
    _update(device, j, S.IN_PROGRESS).result(T)
    _wait_status(admin, j, device.thing, "TIMED_OUT")


def test_cancel_with_and_without_force_and_delete(device, admin, services_emulator):
    queued, running = _job_id(), _job_id()
    admin.job_create({"a": 1}, [device.thing], job_id=running)
    admin.job_create({"a": 2}, [device.thing], job_id=queued)
    device.jobs.start_next_pending_job_execution(
        iotjobs.StartNextPendingJobExecutionRequest(thing_name=device.thing)).result(T)
    notify = _stream(device.jobs.create_job_executions_changed_stream,
                     iotjobs.JobExecutionsChangedSubscriptionRequest(thing_name=device.thing))

    doc = admin.job_cancel(queued)
    assert doc["status"] == "CANCELED" and doc["executionCounts"] == {"CANCELED": 1}
    ev = notify.get(timeout=T)
    assert [s.job_id for s in ev.jobs[S.IN_PROGRESS]] == [running] and S.QUEUED not in ev.jobs

    # without force an IN_PROGRESS execution survives and may still finish
    doc = admin.job_cancel(running)
    assert doc["status"] == "CANCELED" and doc["executionCounts"] == {"IN_PROGRESS": 1}
    _update(device, running, S.IN_PROGRESS, status_details={"p": "50"}).result(T)
    # with force it is canceled, and the device learns it
    doc = admin.job_cancel(running, force=True)
    assert doc["forceCanceled"] is True and doc["executionCounts"] == {"CANCELED": 1}
    assert notify.get(timeout=T).jobs == {}
    err = _rejected(_update(device, running, S.SUCCEEDED))
    assert err.code == iotjobs.RejectedErrorCode.INVALID_STATE_TRANSITION
    assert err.execution_state.status == S.CANCELED
    with pytest.raises(AdminRequestError) as info:
        admin.job_cancel(running)
    assert info.value.code == "InvalidStateTransition"

    # delete: IN_PROGRESS needs force; pending executions become REMOVED and vanish for the device
    gone = _job_id()
    admin.job_create({"a": 3}, [device.thing], job_id=gone)
    _update(device, gone, S.IN_PROGRESS).result(T)
    with pytest.raises(AdminRequestError) as info:
        admin.job_delete(gone)
    assert info.value.code == "InvalidStateTransition" and "force" in info.value.message
    doc = admin.job_delete(gone, force=True)
    assert doc["status"] == "DELETED" and doc["executionCounts"] == {"REMOVED": 1}
    err = _rejected(device.jobs.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
        thing_name=device.thing, job_id=gone)))
    assert err.code == iotjobs.RejectedErrorCode.RESOURCE_NOT_FOUND


def test_admin_rejects_bad_jobs(admin):
    cases = [
        (dict(document=[1], things=["a"]), "InvalidRequest"),
        (dict(document={"x": "y" * 40000}, things=["a"]), "InvalidRequest"),
        (dict(document={}, things=[]), "InvalidRequest"),
        (dict(document={}, things=["bad name!"]), "InvalidRequest"),
        (dict(document={}, things=["a"], job_id="bad id"), "InvalidRequest"),
        (dict(document={}, things=["a"], timeout_minutes=0), "InvalidRequest"),
    ]
    for kwargs, code in cases:
        with pytest.raises(AdminRequestError) as info:
            admin.job_create(**kwargs)
        assert info.value.code == code, kwargs
    j = _job_id()
    admin.job_create({}, ["a"], job_id=j)
    with pytest.raises(AdminRequestError) as info:
        admin.job_create({}, ["a"], job_id=j)
    assert info.value.code == "ResourceAlreadyExists"
    with pytest.raises(AdminRequestError) as info:
        admin.job_describe("nope")
    assert info.value.code == "ResourceNotFound"
    assert any(x["jobId"] == j for x in admin.job_list())
