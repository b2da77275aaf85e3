"""``methane-agent doctor``: pre-flight checks a field technician can act on, one line each.

Each check says PASS, WARN or FAIL, what it saw and how to fix it. Checks run in the order a
problem would block the next one (config, identity, clock, DNS, TLS, MQTT, sensors, disk); a check
whose prerequisite failed reports FAIL "not attempted" rather than a second, confusing error."""

from agent.doctor.report import Result, Status, render_json, render_text
from agent.doctor.runner import DoctorOptions, run_checks

__all__ = ["DoctorOptions", "Result", "Status", "render_json", "render_text", "run_checks"]
