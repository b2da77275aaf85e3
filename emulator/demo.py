"""``make demo``: the whole system on one machine, no AWS account and no hardware.

It starts the local IoT Core (mosquitto with mutual TLS, fleet provisioning, shadow, jobs, the
telemetry recorder) with the cloud side's local twin (the ingest into a private InfluxDB, as
``emulator serve --ingest`` runs it), starts the agent with only a CLAIM certificate so it provisions itself, samples
a simulated gas-site sensor plus a real Dynament driver talking to an emulated sensor on a pty, and
prints every batch as it arrives at the broker, decoded with the agent's own decoder. A scripted
leak plume in the simulated sensor raises a methane alarm (10 %LEL warn, 20 %LEL alarm): its events
are printed as they arrive on the alarm topic, raised, escalated and cleared. Midway an
"operator" changes the config through the shadow and sends two jobs (one the agent must refuse). After
``DEMO_SECONDS`` it stops the agent, asks the recorder whether any sequence number is missing, reads
the readings back from the database and draws each sensor's methane as a terminal chart, and exits 0
only if every reading the agent acknowledged arrived and is in the database without a gap."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from awscrt import mqtt5

from agent import payload
from cloud.preprovision.allowlist import FileAllowlist
from emulator.admin import Admin, AdminRequestError
from emulator.admin_client import admin_client
from emulator.demo_chart import completeness_command, show_store
from emulator.ingest import LocalIngest
from emulator.lifecycle import Emulator
from emulator.recorder import TelemetryRecorder
from emulator.services.device_services import DeviceServices
from iotmqtt import Lifecycle

ROOT = Path(__file__).resolve().parents[1]
# A reading waits at most this long in the agent before its batch goes; with the ingest's few
# milliseconds it bounds how late a reading is queryable (bench/bench_ingest.py measures p95).
BATCH_MAX_AGE_S = 1.5
SHADOW_BATCH_MAX_AGE_S = 1.0  # what the "operator" sets through the shadow midway
DIM, BOLD, RED, GREEN, YELLOW, RESET = "\033[2m", "\033[1m", "\033[31m", "\033[32m", "\033[33m", "\033[0m"


def say(msg: str, color: str = "") -> None:
    if not sys.stdout.isatty():
        color = ""
    print(f"{color}{msg}{RESET if color else ''}", flush=True)


DEMO_SERIAL = "demo-0001"


def agent_config(state: Path, info: Any, dynament_link: Path | None, serial_file: Path) -> str:
    sensors = """
[[sensors]]
id = "site-sim"
driver = "simulated"
interval_s = 1.0
settings = { seed = 7, leaks_per_hour = 180.0, leak_decay_s = 8.0, plumes = [
  { start_s = 2, duration_s = 5, peak_ppm = 15000 }] }
  [[sensors.alarms]]
  quantity = "methane"
  unit = "%LEL"
  warn = 10.0
  alarm = 20.0
  clear_margin = 2.0
  latch = false
"""
    if dynament_link is not None:
        sensors += f"""
[[sensors]]
id = "ndir-1"
driver = "dynament"
interval_s = 2.0
settings = {{ port = "{dynament_link}", unit = "ppm", warmup_s = 5.0 }}
"""
    return f"""
state_dir = "{state}"
[device]
site_id = "demo-site"
[connection]
endpoint = "{info.endpoint}"
port = {info.port}
ca_file = "{info.ca_file}"
keep_alive_s = 30
[provisioning]
enabled = true
claim_cert_file = "{info.claim_cert_file}"
claim_key_file = "{info.claim_key_file}"
template_name = "{info.template_name}"
parameters = {{ SiteId = "demo-site" }}
serial_source = "file:{serial_file}"
[uplink]
encoding = "compact"
batch_max_age_s = {BATCH_MAX_AGE_S}
[spool]
min_free_disk_bytes = 1048576
[logging]
level = "WARNING"
{sensors}"""


def start_dynament(link: Path) -> subprocess.Popen[bytes] | None:
    """The byte-exact Dynament emulator from the test suite, as simulated hardware."""
    if not (ROOT / "tests" / "devices" / "serve.py").exists():
        return None
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.devices.serve", "dynament", "--link", str(link), "--value", "2.2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not link.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc if link.exists() else None


def watcher(info: Any) -> tuple[mqtt5.Client, queue.Queue[tuple[str, bytes, str | None]]]:
    """An admin client that sees every telemetry batch, as an IoT rule would."""
    q: queue.Queue[tuple[str, bytes, str | None]] = queue.Queue()
    connected = queue.Queue[bool]()
    client = admin_client(info, "demo-viewer", Lifecycle(
        on_publish=lambda d: q.put(
            (d.publish_packet.topic, bytes(d.publish_packet.payload), d.publish_packet.content_type)
        ),
        on_success=lambda d: connected.put(True),
    ))
    client.start()
    connected.get(timeout=15)
    client.subscribe(mqtt5.SubscribePacket([mqtt5.Subscription("dt/methane/+/+/telemetry", mqtt5.QoS(1)),
                                            mqtt5.Subscription("dt/methane/+/+/alarm", mqtt5.QoS(1))])).result(10)
    return client, q


def show_alarm(topic: str, data: bytes) -> str:
    e = json.loads(data)
    value = "" if e.get("value") is None else f" {e['value']:.1f} {e.get('unit') or ''} (threshold {e['threshold']})"
    say(f"{time.strftime('%H:%M:%S')} {topic} #{e['event_id']} {e['type'].upper()} {e['level']} "
        f"{e['sensor_id']}/{e['quantity']}{value} reading seq {e['seq']}", RED if e["level"] != "normal" else GREEN)
    return str(e["type"])


def show_batch(topic: str, data: bytes, ctype: str | None) -> int:
    batch = payload.decode(data, ctype)
    per_sensor: dict[str, list[str]] = {}
    alarms = 0
    for r in batch.readings:
        alarms += r.alarm
        per_sensor.setdefault(r.sensor_id, []).append(f"{r.quantity}={r.value:g}{r.unit}")
    n = len(batch.readings)
    say(
        f"{time.strftime('%H:%M:%S')} {topic} seq {batch.first_seq}..{batch.last_seq} "
        f"{n} readings in {len(data)} bytes ({len(data) / max(1, n):.2f} B/reading, {ctype})",
        BOLD,
    )
    last_ts = max(r.ts_ms for r in batch.readings)
    for sensor, _ in per_sensor.items():
        latest = {r.quantity: r for r in batch.readings if r.sensor_id == sensor and r.ts_ms == last_ts}
        if not latest:
            latest = {r.quantity: r for r in batch.readings if r.sensor_id == sensor}
        line = "  ".join(f"{q}={r.value:g} {r.unit}" + (" [" + ",".join(r.flags) + "]" if r.flags else "")
                         for q, r in latest.items())
        say(f"    {sensor:>9}: {line}", DIM)
    if alarms:
        say(f"    {alarms} reading(s) with the alarm bit (sent at once, evicted last)", RED)
    return n


class RemoteAct:
    """What an operator does from the cloud, at fixed points of the demo: change the configuration
    in the shadow, send a config-update job, and send a hostile job the agent must refuse."""

    def __init__(self, admin: Admin, identity_file: Path, seconds: float) -> None:
        self.admin = admin
        self.identity_file = identity_file
        self.at_shadow = seconds * 0.35
        self.at_jobs = seconds * 0.55
        self.shadow_sent: float | None = None
        self.shadow_done = False
        self.jobs: dict[str, str] = {}

    def thing(self) -> str | None:
        try:
            return str(json.loads(self.identity_file.read_text())["thing_name"])
        except (OSError, ValueError, KeyError):
            return None

    def step(self, elapsed: float) -> None:
        thing = self.thing()
        if thing is None:
            return
        try:
            self._step(thing, elapsed)
        except AdminRequestError as exc:
            say(f"  operator: emulator refused a request: {exc}", RED)

    def _step(self, thing: str, elapsed: float) -> None:
        if self.shadow_sent is None and elapsed >= self.at_shadow:
            self.admin.shadow_set_desired(thing, {"config": {"uplink": {"batch_max_age_s": SHADOW_BATCH_MAX_AGE_S}}},
                                          "methane-agent")
            self.shadow_sent = time.monotonic()
            say(f"  operator: shadow desired.config.uplink.batch_max_age_s = {SHADOW_BATCH_MAX_AGE_S} "
                f"(was {BATCH_MAX_AGE_S})", YELLOW)
        elif self.shadow_sent is not None and not self.shadow_done:
            reported = self.admin.shadow_get(thing, "methane-agent").get("state", {}).get("reported", {})
            if reported.get("config", {}).get("uplink", {}).get("batch_max_age_s") == SHADOW_BATCH_MAX_AGE_S:
                self.shadow_done = True
                took = time.monotonic() - self.shadow_sent
                say(f"  agent: applied live without a restart and reported it ({took:.1f}s, "
                    f"config hash {reported.get('status', {}).get('config_hash', '?')})", YELLOW)
        if not self.jobs and elapsed >= self.at_jobs:
            self.jobs = {"demo-interval": "", "demo-hostile": ""}
            self.admin.job_create({"action": "config-update", "params": {"patch": {
                "sensors": {"site-sim": {"interval_s": 2.0}}}}}, [thing], job_id="demo-interval")
            self.admin.job_create({"action": "run-command", "params": {"cmd": "rm -rf /"}}, [thing],
                                  job_id="demo-hostile")
            say("  operator: job demo-interval (config-update: site-sim every 2 s) and job demo-hostile "
                "(run-command 'rm -rf /')", YELLOW)
        for job_id, seen in self.jobs.items():
            if seen in ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED"):
                continue
            ex = self.admin.job_describe(job_id, thing)["execution"]
            if ex["status"] != seen and ex["status"] != "QUEUED":
                self.jobs[job_id] = ex["status"]
                reason = (ex.get("statusDetails") or {}).get("reason", "")
                say(f"  agent: job {job_id} {ex['status']}" + (f" ({reason})" if reason else ""),
                    GREEN if ex["status"] == "SUCCEEDED" else YELLOW)


def main() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "20"))
    base = ROOT / "demo-state"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    recorder = TelemetryRecorder()
    # The serial "written at manufacturing", and the fleet's allowlist of manufactured serials that
    # the pre-provisioning hook (cloud/preprovision) checks before the gateway may register.
    (base / "serial").write_text(DEMO_SERIAL + "\n")
    (base / "serials.csv").write_text(f"serial,site\n{DEMO_SERIAL},demo-site\n")
    ingest = LocalIngest()
    emu = Emulator(base / "emulator", components=[DeviceServices(), recorder, ingest], fleet_provisioning=True,
                   serial_allowlist=FileAllowlist(base / "serials.csv"))
    agent: subprocess.Popen[bytes] | None = None
    device: subprocess.Popen[bytes] | None = None
    viewer: mqtt5.Client | None = None
    try:
        info = emu.start()
        say(f"local IoT Core ready on {info.endpoint}:{info.port} (mosquitto, mutual TLS, state in {base})", GREEN)
        device = start_dynament(base / "ttyDYNAMENT")
        if device:
            say(f"emulated Dynament NDIR sensor on {base / 'ttyDYNAMENT'} (a pty speaking the real protocol)", GREEN)
        conf = base / "agent.toml"
        conf.write_text(agent_config(base / "agent-state", info, base / "ttyDYNAMENT" if device else None,
                                     base / "serial"))
        viewer, q = watcher(info)
        say("starting the agent with only a claim certificate: it provisions itself, then streams", GREEN)
        say(f"  pre-provisioning hook: serial {DEMO_SERIAL} is on the allowlist {base / 'serials.csv'} "
            "(pinned to site demo-site); any other serial, or a second registration of it, is refused", DIM)
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            cwd=ROOT, stderr=open(base / "agent.log", "wb"),  # noqa: SIM115 - closed with the process
        )
        started = time.monotonic()
        deadline = started + seconds
        act = RemoteAct(Admin(info.state_dir), base / "agent-state" / "identity" / "identity.json", seconds)
        shown = 0
        hinted = False
        alarm_types: list[str] = []
        next_status = time.monotonic() + 5
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                say(f"agent exited early with {agent.returncode}; see {base / 'agent.log'}", RED)
                return 1
            with contextlib.suppress(queue.Empty):
                msgs = [q.get(timeout=0.5)]
                while not q.empty():  # everything that arrived meanwhile, not one per loop
                    msgs.append(q.get_nowait())
                for topic, data, ctype in msgs:
                    if topic.endswith("/alarm"):
                        alarm_types.append(show_alarm(topic, data))
                    else:
                        shown += show_batch(topic, data, ctype)
            act.step(time.monotonic() - started)
            if not hinted and (store := ingest.client) is not None and (thing := act.thing()) is not None:
                hinted = True  # the store runs until the demo ends: now the hint is true
                say("  try, in another terminal while the demo runs: "
                    + completeness_command(store.url, store.database, thing), DIM)
            if time.monotonic() >= next_status:
                next_status += 5
                st = subprocess.run(
                    [sys.executable, "-m", "agent", "status", "--config", str(conf), "--json"],
                    cwd=ROOT, capture_output=True, text=True, timeout=10,
                )
                if st.returncode == 0:
                    s = json.loads(st.stdout)
                    say(f"  status: thing {s['agent']['thing_name']}, spool {s['spool']['readings']} unsent, "
                        f"{s['uplink'].get('readings_acked', 0)} acked, connected={s['uplink'].get('connected')}",
                        YELLOW)
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(15)
        ident = json.loads((base / "agent-state" / "identity" / "identity.json").read_text())
        thing = ident["thing_name"]
        recorder.flush()
        got = recorder.received(thing)
        gaps = recorder.gaps(thing, upto=max(got) if got else None)
        say(f"\nagent stopped (exit {rc}). Provisioned as {thing}.", GREEN)
        say(f"recorder: {len(got)} readings received, sequence {min(got, default=0)}..{max(got, default=0)}, "
            f"{recorder.duplicates(thing)} duplicates, gaps {gaps or 'none'}", GREEN)
        say(f"alarm topic: {len(alarm_types)} events ({', '.join(alarm_types) or 'none'}); "
            f"`methane-agent events --config {conf}` lists them", GREEN if "cleared" in alarm_types else YELLOW)
        say("readings still in the spool are sent on the next start; nothing is dropped.", DIM)
        ingest.flush()
        assert ingest.client is not None
        stored_ok = show_store(ingest.client, thing, say, emu.state_dir)
        return 0 if got and not gaps and rc == 0 and shown and stored_ok else 1
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        if viewer is not None:
            viewer.stop()
        if device is not None:
            device.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                device.wait(5)
        emu.stop()


if __name__ == "__main__":
    sys.exit(main())
