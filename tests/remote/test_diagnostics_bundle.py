"""upload-diagnostics' bundle: the status and the newest log lines, never more than the cap
(``remote.diagnostics_max_bytes``), whatever the lines and however many are left out."""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.remote.jobs.actions.diagnostics import bundle

STATUS = {"agent": {"thing_name": "gw-0001", "pid": 1234}, "spool": {"readings": 12}}


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.text(max_size=200), max_size=60), max_bytes=st.integers(300, 4096))
# A full test run's log ring: the kept lines fill the budget, five are left out, and the
# "logs_dropped" count the budget did not include took the bundle 17 bytes over.
@example(lines=["x" * 151] * 30, max_bytes=4096)
def test_bundle_never_exceeds_the_cap_and_keeps_the_newest_lines(lines, max_bytes):
    body = bundle(STATUS, lines, max_bytes)
    assert len(body) <= max_bytes, (len(body), max_bytes)
    doc = json.loads(body)
    kept = doc["logs"]
    assert kept == lines[len(lines) - len(kept):]  # the newest, in order
    assert doc["logs_dropped"] == len(lines) - len(kept)
