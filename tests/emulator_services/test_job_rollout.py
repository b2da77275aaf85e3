"""Jobs at fleet scale in the emulator: IoT Core's jobExecutionsRolloutConfig (maximumPerMinute) and
abortConfig, as pure service logic with an emulated minute of one second."""

from __future__ import annotations

import pytest

from emulator.services.jobs import JobsError, JobsService, JobsSettings

NOW = 1_700_000_000.0
THINGS = [f"t{i}" for i in range(10)]


@pytest.fixture
def jobs(tmp_path):
    svc = JobsService(tmp_path / "j.sqlite", JobsSettings(seconds_per_minute=1.0))
    yield svc
    svc.close()


def _queued(jobs: JobsService, job_id: str) -> list[str]:
    return [e["thingName"] for e in jobs.describe_job(job_id)["executions"]]


def _fail(jobs: JobsService, thing: str, job_id: str, now: float, status: str = "FAILED") -> list:
    jobs.handle(f"$aws/things/{thing}/jobs/start-next", b"{}", now)
    return jobs.handle(f"$aws/things/{thing}/jobs/{job_id}/update", f'{{"status":"{status}"}}'.encode(), now)


def test_rollout_notifies_at_most_the_rate_and_completes_after_the_last(jobs):
    doc, out = jobs.create_job({"a": 1}, THINGS[:5], NOW, job_id="r", rollout_config={"maximumPerMinute": 60})
    assert _queued(jobs, "r") == ["t0"] and doc["notified"] == 1 and doc["waitingForRollout"] == 4
    assert {o.topic for o in out} == {"$aws/things/t0/jobs/notify", "$aws/things/t0/jobs/notify-next"}
    # 60/min with a 1 s minute = one every 1/60 s; at +2/60 s two more are due.
    assert jobs.next_deadline() - NOW == pytest.approx(1 / 60)
    out = jobs.tick(NOW + 2 / 60 + 1e-6)
    assert _queued(jobs, "r") == ["t0", "t1", "t2"]
    assert {o.topic for o in out} >= {"$aws/things/t1/jobs/notify-next", "$aws/things/t2/jobs/notify-next"}
    for thing in ("t0", "t1", "t2"):
        jobs.handle(f"$aws/things/{thing}/jobs/start-next", b"{}", NOW + 0.1)
        jobs.handle(f"$aws/things/{thing}/jobs/r/update", b'{"status":"SUCCEEDED"}', NOW + 0.1)
    assert jobs.describe_job("r")["status"] == "IN_PROGRESS"  # two targets still wait for their turn
    jobs.tick(NOW + 1.0)
    assert _queued(jobs, "r") == THINGS[:5] and jobs.describe_job("r")["waitingForRollout"] == 0
    for thing in ("t3", "t4"):
        jobs.handle(f"$aws/things/{thing}/jobs/start-next", b"{}", NOW + 1.1)
        jobs.handle(f"$aws/things/{thing}/jobs/r/update", b'{"status":"SUCCEEDED"}', NOW + 1.1)
    assert jobs.describe_job("r")["status"] == "COMPLETED"
    assert jobs.next_deadline() is None


def test_abort_threshold_cancels_queued_and_never_notifies_the_rest(jobs):
    abort = {"criteriaList": [{"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 50,
                               "minNumberOfExecutedThings": 4}]}
    jobs.create_job({"a": 1}, THINGS, NOW, job_id="a", rollout_config={"maximumPerMinute": 300}, abort_config=abort)
    jobs.tick(NOW + 3 / 300 + 1e-6)
    assert len(_queued(jobs, "a")) == 4
    _fail(jobs, "t0", "a", NOW + 0.02)
    assert jobs.describe_job("a")["status"] == "IN_PROGRESS"  # 1 of 4 = 25 %
    jobs.handle("$aws/things/t1/jobs/start-next", b"{}", NOW + 0.02)  # t1 IN_PROGRESS: may finish
    out = _fail(jobs, "t2", "a", NOW + 0.03)  # 2 of 4 = 50 %: abort
    job = jobs.describe_job("a")
    assert job["status"] == "CANCELED" and job["reasonCode"] == "AbortThresholdReached"
    assert job["executionCounts"] == {"FAILED": 2, "IN_PROGRESS": 1, "CANCELED": 1}
    assert job["waitingForRollout"] == 0 and job["notified"] == 4
    # The canceled device hears of it in the same turn as the failing device's reply.
    assert "$aws/things/t3/jobs/notify-next" in {o.topic for o in out}
    assert jobs.tick(NOW + 60) == [] and len(_queued(jobs, "a")) == 4  # the other 6 are never notified
    assert jobs.handle("$aws/things/t1/jobs/a/update", b'{"status":"SUCCEEDED"}', NOW + 61)[0].topic.endswith(
        "/accepted")


def test_abort_on_all_failure_types_without_rollout(jobs):
    abort = {"criteriaList": [{"failureType": "ALL", "action": "CANCEL", "thresholdPercentage": 20,
                               "minNumberOfExecutedThings": 1}]}
    jobs.create_job({"a": 1}, THINGS, NOW, job_id="b", abort_config=abort)
    assert len(_queued(jobs, "b")) == 10  # no rollout config: everyone at once
    _fail(jobs, "t0", "b", NOW, "REJECTED")
    assert jobs.describe_job("b")["status"] == "IN_PROGRESS"  # 10 %
    _fail(jobs, "t1", "b", NOW, "FAILED")
    assert jobs.describe_job("b")["executionCounts"] == {"REJECTED": 1, "FAILED": 1, "CANCELED": 8}


@pytest.mark.parametrize("rollout, abort, message", [
    ({"maximumPerMinute": 0}, None, "maximumPerMinute must be an integer 1-1000"),
    ({"maximumPerMinute": 1001}, None, "maximumPerMinute must be an integer 1-1000"),
    ({"exponentialRate": {}}, None, "exponentialRate is not emulated"),
    ({"perMinute": 5}, None, "takes maximumPerMinute"),
    (None, {"criteriaList": []}, "non-empty criteriaList"),
    (None, {"criteriaList": [{"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 10.555,
                              "minNumberOfExecutedThings": 1}]}, "two decimals"),
    (None, {"criteriaList": [{"failureType": "OOPS", "action": "CANCEL", "thresholdPercentage": 10,
                              "minNumberOfExecutedThings": 1}]}, "failureType must be one of"),
    (None, {"criteriaList": [{"failureType": "FAILED", "action": "STOP", "thresholdPercentage": 10,
                              "minNumberOfExecutedThings": 1}]}, "action must be CANCEL"),
    (None, {"criteriaList": [{"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 10,
                              "minNumberOfExecutedThings": 0}]}, "minNumberOfExecutedThings"),
])
def test_bad_rollout_or_abort_config_is_refused_and_creates_nothing(jobs, rollout, abort, message):
    with pytest.raises(JobsError, match=message) as err:
        jobs.create_job({"a": 1}, ["t0"], NOW, job_id="x", rollout_config=rollout, abort_config=abort)
    assert err.value.code == "InvalidRequest"
    assert jobs.list_jobs() == []
