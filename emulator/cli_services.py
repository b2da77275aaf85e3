"""``methane-agent emulator shadow …`` and ``emulator job …``: admin commands that reach the
RUNNING emulator's Shadow and Jobs services through their admin socket (they own the state and
publish the delta / notify messages an admin change causes)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emulator.admin import Admin, AdminRequestError


def register(esub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, required=True, help="state dir of the running emulator")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

    shadow = esub.add_parser("shadow", help="read or change a thing's Device Shadow")
    ssub = shadow.add_subparsers(dest="shadow_command", required=True, metavar="ACTION")
    get = ssub.add_parser("get", parents=[common], help="print the shadow document")
    get.add_argument("--thing", required=True)
    get.add_argument("--shadow", default=None, help="named shadow (default: the classic shadow)")
    get.set_defaults(func=_shadow_get)
    sd = ssub.add_parser("set-desired", parents=[common], help="merge a desired state (publishes the delta)")
    sd.add_argument("--thing", required=True)
    sd.add_argument("--shadow", default=None, help="named shadow (default: the classic shadow)")
    sd.add_argument("--json-doc", required=True, help="desired state as a JSON object; null values delete keys")
    sd.set_defaults(func=_shadow_set_desired)

    job = esub.add_parser("job", help="create, list, describe and cancel IoT jobs")
    jsub = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    create = jsub.add_parser("create", parents=[common], help="queue a job for things and/or thing groups")
    create.add_argument("--document", type=Path, required=True, help="job document file (JSON object)")
    create.add_argument("--thing", action="append", default=[], dest="things", help="target thing (repeatable)")
    create.add_argument("--thing-group", action="append", default=[], dest="thing_groups",
                        help="target every thing in this group now (repeatable; snapshot)")
    create.add_argument("--job-id", default=None)
    create.add_argument("--timeout-minutes", type=int, default=None, help="in-progress timeout (1-10080)")
    create.add_argument("--max-per-minute", type=int, default=None,
                        help="rollout rate: notify at most this many things per minute (1-1000)")
    create.add_argument("--abort-failure-type", choices=("FAILED", "REJECTED", "TIMED_OUT", "ALL"), default=None,
                        help="abort (cancel queued executions) on this failure type")
    create.add_argument("--abort-threshold-percent", type=float, default=None,
                        help="abort when failures reach this share of notified things (0-100]")
    create.add_argument("--abort-min-executed", type=int, default=None,
                        help="abort only after this many things were notified (>= 1)")
    create.set_defaults(func=_job_create)
    lst = jsub.add_parser("list", parents=[common], help="list jobs")
    lst.set_defaults(func=_job_list)
    desc = jsub.add_parser("describe", parents=[common], help="a job, its document and executions")
    desc.add_argument("job_id")
    desc.add_argument("--thing", default=None, help="only this thing's execution")
    desc.set_defaults(func=_job_describe)
    cancel = jsub.add_parser("cancel", parents=[common], help="cancel queued executions (--force: running too)")
    cancel.add_argument("job_id")
    cancel.add_argument("--force", action="store_true", help="also cancel IN_PROGRESS executions")
    cancel.set_defaults(func=_job_cancel)
    delete = jsub.add_parser("delete", parents=[common], help="delete a job; pending executions become REMOVED")
    delete.add_argument("job_id")
    delete.add_argument("--force", action="store_true", help="also remove IN_PROGRESS executions")
    delete.set_defaults(func=_job_delete)


def _run(args: argparse.Namespace, action: Any, human: Any) -> int:
    try:
        result = action(Admin(args.state_dir))
    except AdminRequestError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(human(result))
    return 0


def _counts(job: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(job["executionCounts"].items())) or "no executions"


def _pretty(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)


def _shadow_get(args: argparse.Namespace) -> int:
    return _run(args, lambda a: a.shadow_get(args.thing, args.shadow), _pretty)


def _shadow_set_desired(args: argparse.Namespace) -> int:
    try:
        desired = json.loads(args.json_doc)
    except json.JSONDecodeError as exc:
        print(f"error: --json-doc is not valid JSON: {exc}", file=sys.stderr)
        return 2
    return _run(
        args,
        lambda a: a.shadow_set_desired(args.thing, desired, args.shadow),
        lambda doc: f"shadow version {doc['version']}\n{_pretty(doc['state'])}",
    )


def _job_create(args: argparse.Namespace) -> int:
    try:
        document = json.loads(args.document.read_bytes())
    except OSError as exc:
        print(f"error: --document {args.document}: {exc.strerror}", file=sys.stderr)
        return 2
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        print(f"error: --document {args.document} is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not args.things and not args.thing_groups:
        print("error: give at least one --thing or --thing-group", file=sys.stderr)
        return 2
    abort_args = (args.abort_failure_type, args.abort_threshold_percent, args.abort_min_executed)
    abort = None
    if any(a is not None for a in abort_args):
        if any(a is None for a in abort_args):
            print("error: --abort-failure-type, --abort-threshold-percent and --abort-min-executed go together",
                  file=sys.stderr)
            return 2
        abort = {"criteriaList": [{"failureType": args.abort_failure_type, "action": "CANCEL",
                                   "thresholdPercentage": args.abort_threshold_percent,
                                   "minNumberOfExecutedThings": args.abort_min_executed}]}
    rollout = None if args.max_per_minute is None else {"maximumPerMinute": args.max_per_minute}
    return _run(
        args,
        lambda a: a.job_create(document, args.things, args.job_id, args.timeout_minutes,
                               thing_groups=args.thing_groups, rollout=rollout, abort=abort),
        lambda doc: f"created job {doc['jobId']} for {len(doc['targets'])} thing(s): {_counts(doc)}",
    )


def _job_list(args: argparse.Namespace) -> int:
    def human(jobs: list[dict[str, Any]]) -> str:
        if not jobs:
            return "no jobs"
        lines = [f"{'JOB ID':<34} {'STATUS':<12} EXECUTIONS"]
        for j in jobs:
            lines.append(f"{j['jobId']:<34} {j['status']:<12} {_counts(j)}")
        return "\n".join(lines)

    return _run(args, lambda a: a.job_list(), human)


def _job_describe(args: argparse.Namespace) -> int:
    def human(doc: dict[str, Any]) -> str:
        if args.thing is not None:
            return _pretty(doc)
        lines = [f"job {doc['jobId']} {doc['status']}" + (f" ({doc['reasonCode']})" if "reasonCode" in doc else ""),
                 f"targets: {len(doc['targets'])}" + (f" (groups {', '.join(doc['targetGroups'])})"
                                                      if doc.get("targetGroups") else "")]
        if "notified" in doc:
            rate = doc.get("jobExecutionsRolloutConfig", {}).get("maximumPerMinute")
            lines.append(f"notified: {doc['notified']}, waiting for rollout: {doc['waitingForRollout']}"
                         + (f" (max {rate}/min)" if rate else ""))
        for c in doc.get("abortConfig", {}).get("criteriaList", []):
            lines.append(f"abort: {c['failureType']} >= {c['thresholdPercentage']}% after "
                         f"{c['minNumberOfExecutedThings']} notified")
        lines.append("executions:")
        lines += [f"  {k:<12} {v}" for k, v in sorted(doc["executionCounts"].items())] or ["  (none)"]
        return "\n".join(lines)

    return _run(args, lambda a: a.job_describe(args.job_id, args.thing), human)


def _job_cancel(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda a: a.job_cancel(args.job_id, args.force),
        lambda doc: f"job {doc['jobId']} {doc['status']}: {_counts(doc)}",
    )


def _job_delete(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda a: a.job_delete(args.job_id, args.force),
        lambda doc: f"job {doc['jobId']} {doc['status']}: {_counts(doc)}",
    )
