"""End-to-end benchmark: spool -> uplink -> mosquitto (mutual TLS) -> PUBACK, and the real daemon's
memory and CPU, each against a naive baseline over the SAME broker in the same run.

Prints one JSON document. Every measured party runs in its own process so that ``/proc/PID/stat``
(utime + stime, all threads: awscrt's event-loop threads included) and ``VmRSS`` belong to it alone:

* ``drain`` children: a pre-filled ``agent.spool.Spool`` drained by ``agent.uplink.Uplink`` over
  ``agent.connection.Connection`` on an asyncio loop, wired as ``agent/runtime.py`` wires them
  (a committer task beside the uplink). Timed from the moment the connection is up until the spool
  is empty, i.e. every reading PUBACKed and deleted.
* ``naive`` children: one JSON message per reading, QoS1, awscrt MQTT5 built with awsiotsdk's
  ``mtls_from_path`` as AWS's samples do; either publish-and-wait for each PUBACK ("sequential") or a
  window of at most 100 unacknowledged publishes (IoT Core's in-flight limit). The naive client reads
  its readings from a list in memory (no spool at all), which flatters it.
* ``naive_idle``: the same naive client publishing 8 readings/s as they are sampled (the idle CPU
  baseline beside an agent with 8 simulated channels at 1 Hz).
* the agent itself: ``python -m agent run --config FILE`` (steady, backlog drain, backlog offline).

    .venv/bin/python -m bench.bench_e2e [--quick] [--readings 200000] [--backlog 1000000] [--idle-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.config import ConnectionConfig, UplinkConfig  # noqa: E402
from agent.spool import Reading, Spool  # noqa: E402
from drivers.simulated import SimulatedDriver, SimulatedSettings  # noqa: E402

THING = "gw-0001"
SITE = "site-1"
TOPIC = f"dt/methane/{SITE}/{THING}/telemetry"
CHANNELS = 8  # two simulated sensors x (methane, temperature, humidity, pressure)
IOT_PUBLISHES_PER_S = 100
IOT_BYTES_PER_S = 512 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- /proc helpers -----------------------------------------------------------------------------------
def cpu_s(pid: int | str = "self") -> float:
    """utime + stime of every thread of ``pid`` so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, its anonymous part (heap: what a backlog could grow) and VmHWM (peak RSS so far)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def rss_kib(pid: int | str = "self") -> int:
    return mem_kib(pid)["VmRSS"]


def poll(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


# --- readings ------------------------------------------------------------------------------------------
def sample_seconds(seconds: int, ts0_ms: int) -> list[list[Reading]]:
    """``seconds`` ticks of two seeded simulated sensors (8 channels), one tick per second."""
    drivers = [SimulatedDriver(SimulatedSettings(seed=i)) for i in range(CHANNELS // 4)]
    ticks: list[list[Reading]] = []
    for s in range(seconds):
        tick = []
        for i, d in enumerate(drivers):
            for m in d.read():
                tick.append(Reading.new(ts0_ms + 1000 * s, True, f"sim-{i + 1}", m.quantity, m.value, m.unit,
                                       tuple(sorted(m.flags))))  # fmt: skip
        ticks.append(tick)
    return ticks


def fill_spool(path: Path, readings: int) -> dict[str, Any]:
    """A backlog as a gateway offline for ``readings / 8`` seconds would have spooled, ending an hour
    ago: a tail younger than ``batch_max_age_s`` would (rightly) wait for its batch age, and the
    drain would measure that wait instead of throughput."""
    seconds = readings // CHANNELS
    ts0 = int(time.time() * 1000) - seconds * 1000 - 3_600_000
    sp = Spool(path, max_bytes=1 << 34, min_free_disk_bytes=0, commit_interval_s=60.0)
    sp.open()
    t0 = time.perf_counter()
    chunk = 5000
    for start in range(0, seconds, chunk):
        for tick in sample_seconds(min(chunk, seconds - start), ts0 + start * 1000):
            sp.append(tick)
        sp.commit()
    st = sp.stats()
    sp.close()
    elapsed = time.perf_counter() - t0
    return {"readings": st.readings, "file_mib": round(st.file_bytes / 2**20, 1), "fill_s": round(elapsed, 1)}


def copy_spool(template: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for f in template.parent.iterdir():
        if f.name.startswith(template.name):
            shutil.copy2(f, dest_dir / f.name)
    return dest_dir / template.name


# --- child: the agent's uplink draining a spool -------------------------------------------------------
async def _drain(p: dict[str, Any]) -> dict[str, Any]:
    from agent.connection import Connection
    from agent.uplink import Uplink

    info = p["info"]
    spool = Spool(Path(p["spool"]), max_bytes=1 << 34, min_free_disk_bytes=0, commit_interval_s=1.0)
    spool.open()
    total = spool.stats().readings
    loop = asyncio.get_running_loop()
    conf = ConnectionConfig(endpoint=info["endpoint"], port=info["port"], ca_file=info["ca_file"],
                            cert_file=info["cert_file"], key_file=info["key_file"],
                            iot_core_limits=p["iot_core_limits"])  # fmt: skip
    up_conf = UplinkConfig(encoding=p["encoding"], batch_max_bytes=p["batch_max_bytes"], batch_max_age_s=60.0)
    conn = Connection(conf, f"{THING}-drain", loop, ack_timeout_s=up_conf.ack_timeout_s)
    uplink = Uplink(spool, conn, up_conf, THING, SITE)
    conn.start()
    await asyncio.wait_for(conn.connected.wait(), 30)

    async def committer() -> None:  # as agent.runtime.Agent._committer (acks are written at once)
        while True:
            if spool.commit_due(time.monotonic()) and spool.commit():
                uplink.notify()
            await asyncio.sleep(0.25)

    rss_before = rss_kib()
    cpu0, t0 = cpu_s(), time.perf_counter()
    tasks = [loop.create_task(uplink.run()), loop.create_task(committer())]
    deadline = time.monotonic() + p["timeout_s"]
    while spool.stats().readings > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    cpu = cpu_s() - cpu0
    left = spool.stats().readings
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await conn.stop()
    spool.close()
    s = uplink.stats
    if left:
        raise SystemExit(f"drain timed out: {left} of {total} readings left ({s.failures} failures, {s.last_error})")
    return {
        "readings": total,
        "seconds": round(elapsed, 3),
        "readings_per_s": round(total / elapsed),
        "publishes": s.batches_acked,
        "publishes_per_s": round(s.batches_acked / elapsed, 1),
        "readings_per_publish": round(s.readings_acked / max(1, s.batches_acked)),
        "payload_bytes_per_s": round(s.bytes_acked / elapsed),
        "payload_bytes_per_reading": round(s.bytes_acked / max(1, s.readings_acked), 3),
        "failures": s.failures,
        "cpu_s": round(cpu, 3),
        "cpu_s_per_1000_readings": round(cpu / total * 1000, 5),
        "rss_kib_connected_before_drain": rss_before,
        "rss_kib_peak_VmHWM": mem_kib()["VmHWM"],
    }


def child_drain(p: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_drain(p))


# --- child: the naive baseline ------------------------------------------------------------------------
def _naive_client(info: dict[str, Any], client_id: str, iot_core_limits: bool = True) -> Any:
    """As AWS's samples build it. The builder's default flow control is AWS_IOT_CORE_DEFAULTS
    (100 publishes/s, 512 KiB/s), so a sample is held at 100 readings/s unless that is turned off."""
    from awscrt import mqtt5
    from awsiot import mqtt5_client_builder

    flow = (mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS if iot_core_limits
            else mqtt5.ExtendedValidationAndFlowControlOptions.NONE)  # fmt: skip

    connected: Future[None] = Future()

    def on_success(_: Any) -> None:
        if not connected.done():
            connected.set_result(None)

    client = mqtt5_client_builder.mtls_from_path(
        endpoint=info["endpoint"], port=info["port"], cert_filepath=info["cert_file"],
        pri_key_filepath=info["key_file"], ca_filepath=info["ca_file"], client_id=client_id,
        clean_session=True, keep_alive_interval_sec=60, on_lifecycle_connection_success=on_success,
        extended_validation_and_flow_control_options=flow,
    )  # fmt: skip
    client.start()
    connected.result(30)
    return client, mqtt5


def _naive_message(r: Reading, seq: int) -> bytes:
    return json.dumps({"device": THING, "seq": seq, "timestamp": r.ts_ms, "clock_synced": r.clock_synced,
                       "sensor_id": r.sensor_id, "quantity": r.quantity, "value": r.value, "unit": r.unit,
                       "flags": list(r.flags)}).encode()  # fmt: skip


def child_naive(p: dict[str, Any]) -> dict[str, Any]:
    import threading

    readings = [r for tick in sample_seconds(p["readings"] // CHANNELS, 1_767_225_600_000) for r in tick]
    client, mqtt5 = _naive_client(p["info"], f"{THING}-naive", p["iot_core_limits"])
    window = threading.BoundedSemaphore(p["inflight"])
    failures = 0
    done = threading.Event()
    acked = 0
    lock = threading.Lock()

    def on_ack(fut: Future[Any]) -> None:
        nonlocal failures, acked
        ok = fut.exception() is None and fut.result().puback is not None and int(fut.result().puback.reason_code) < 0x80
        with lock:
            acked += 1
            failures += not ok
            if acked == len(readings):
                done.set()
        window.release()

    cpu0, t0 = cpu_s(), time.perf_counter()
    for seq, r in enumerate(readings, 1):
        packet = mqtt5.PublishPacket(topic=TOPIC, payload=_naive_message(r, seq), qos=mqtt5.QoS.AT_LEAST_ONCE)
        window.acquire()
        fut = client.publish(packet)
        if p["inflight"] == 1:
            fut.result(30)  # publish, then wait for the PUBACK, as the SDK samples do
        fut.add_done_callback(on_ack)
    if not done.wait(60):
        raise SystemExit("naive baseline: PUBACKs missing after 60 s")
    elapsed = time.perf_counter() - t0
    cpu = cpu_s() - cpu0
    client.stop()
    n = len(readings)
    return {"readings": n, "inflight": p["inflight"], "iot_core_limits": p["iot_core_limits"],
            "seconds": round(elapsed, 3), "readings_per_s": round(n / elapsed), "failures": failures,
            "cpu_s": round(cpu, 3), "cpu_s_per_1000_readings": round(cpu / n * 1000, 5)}  # fmt: skip


def child_naive_idle(p: dict[str, Any]) -> dict[str, Any]:
    """8 channels at 1 Hz, one JSON message per reading, publish and wait; runs until killed."""
    client, mqtt5 = _naive_client(p["info"], f"{THING}-naive-idle")
    drivers = [SimulatedDriver(SimulatedSettings(seed=i)) for i in range(CHANNELS // 4)]
    seq = 0
    next_t = time.monotonic()
    print("ready", flush=True)
    while True:
        now_ms = int(time.time() * 1000)
        for i, d in enumerate(drivers):
            for m in d.read():
                seq += 1
                r = Reading.new(now_ms, True, f"sim-{i + 1}", m.quantity, m.value, m.unit, tuple(sorted(m.flags)))
                client.publish(mqtt5.PublishPacket(topic=TOPIC, payload=_naive_message(r, seq),
                                                   qos=mqtt5.QoS.AT_LEAST_ONCE)).result(30)  # fmt: skip
        next_t += 1.0
        time.sleep(max(0.0, next_t - time.monotonic()))


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "drain": child_drain,
    "naive": child_naive,
    "naive_idle": child_naive_idle,
}


def run_child(kind: str, params: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--params", json.dumps(params)],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"child {kind} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# --- the real daemon ---------------------------------------------------------------------------------
AGENT_CONFIG = """state_dir = "{state}"
[device]
thing_name = "{thing}"
site_id = "{site}"
[connection]
endpoint = "{endpoint}"
port = {port}
client_id = "{client_id}"
{tls}
[spool]
min_free_disk_bytes = 65536
max_bytes = 17179869184
[uplink]
batch_max_bytes = 5120
[clock]
sync_source = "assume_synced"
[logging]
level = "WARNING"
[[sensors]]
id = "sim-1"
driver = "simulated"
interval_s = 1.0
settings = {{ seed = 1 }}
[[sensors]]
id = "sim-2"
driver = "simulated"
interval_s = 1.0
settings = {{ seed = 2 }}
"""


class AgentProcess:
    """``methane-agent run`` as a subprocess, watched through /proc and its status socket."""

    def __init__(self, work: Path, info: dict[str, Any] | None, spool: Path | None = None,
                 python_args: tuple[str, ...] | list[str] = ("-m", "agent")) -> None:
        self.state = work / "state"
        self.state.mkdir(parents=True)
        if spool is not None:
            copy_spool(spool, self.state)
        tls = ""
        if info:
            tls = "\n".join(f'{k} = "{info[k]}"' for k in ("ca_file", "cert_file", "key_file"))
        self.config = work / "agent.toml"
        self.config.write_text(AGENT_CONFIG.format(
            state=self.state, thing=THING, site=SITE, endpoint=info["endpoint"] if info else "",
            port=info["port"] if info else 8883, client_id=f"{THING}-agent", tls=tls))  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "METHANE_AGENT__"))}
        self.log = open(work / "agent.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, *python_args, "run", "--config", str(self.config)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        self.pid = self.proc.pid

    def status(self) -> dict[str, Any] | None:
        from agent.status import query

        try:
            return query(self.state / "status.sock")
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        st: dict[str, Any] | None = None

        def ready() -> bool:
            nonlocal st
            if self.proc.poll() is not None:
                raise SystemExit(f"agent exited with {self.proc.returncode}: see {self.log.name}")
            st = self.status()
            return st is not None

        poll(ready, timeout, "the agent's status socket", 0.1)
        assert st is not None
        return st

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


def watch(pid: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """CPU percent of one core and VmRSS of ``pid`` over ``seconds`` after ``warmup_s``."""
    time.sleep(warmup_s)
    rss: list[int] = []
    c0, t0 = cpu_s(pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        rss.append(rss_kib(pid))
        time.sleep(1.0)
    c1, t1 = cpu_s(pid), time.monotonic()
    return {
        "seconds": round(t1 - t0, 1),
        "cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 3),
        "rss_kib_first": rss[0],
        "rss_kib_last": rss[-1],
        "rss_kib_max": max(rss),
        **{f"end_{k}_kib": v for k, v in mem_kib(pid).items()},
    }


def connection_info(emu: Any) -> dict[str, Any]:
    """The device's connection settings from a running emulator, as ``agent_steady`` takes them."""
    i = emu.info
    if i is None:
        raise SystemExit("the emulator started without writing its info")
    return {"endpoint": i.endpoint, "port": i.port, "ca_file": str(i.ca_file),
            "cert_file": str(i.device.cert_file), "key_file": str(i.device.key_file)}


def agent_steady(work: Path, info: dict[str, Any], seconds: float,
                 python_args: tuple[str, ...] | list[str] = ("-m", "agent")) -> dict[str, Any]:
    a = AgentProcess(work, info, python_args=python_args)
    try:
        a.wait_ready()
        poll(lambda: bool((a.status() or {}).get("uplink", {}).get("connected")), 30, "agent connected")
        w = watch(a.pid, seconds, warmup_s=5.0)
        st = a.status() or {}
    finally:
        rc = a.stop()
    up = st.get("uplink", {})
    return {**w, "readings_acked": up.get("readings_acked"), "spool_readings": st.get("spool", {}).get("readings"),
            "exit_code": rc}  # fmt: skip


def agent_backlog(
    work: Path, info: dict[str, Any] | None, template: Path, last_seq: int, offline_s: float
) -> dict[str, Any]:
    """With ``info``: the agent drains the backlog (IoT Core limits on, 5120-byte batches, as shipped).
    Without: offline, sampling into the full spool for ``offline_s``."""
    a = AgentProcess(work, info, spool=template)
    rss: list[int] = []
    try:
        st = a.wait_ready(120)
        start_readings = st["spool"]["readings"]
        rss.append(rss_kib(a.pid))
        if info is None:
            w = watch(a.pid, offline_s, warmup_s=2.0)
            st = a.status() or {}
            return {**w, "backlog": start_readings, "spool_readings_end": st.get("spool", {}).get("readings")}
        poll(lambda: bool((a.status() or {}).get("uplink", {}).get("connected")), 30, "agent connected")
        c0, t0 = cpu_s(a.pid), time.monotonic()
        acked = 0

        def drained() -> bool:
            # Readings sampled during the drain are younger than batch_max_age_s and rightly wait:
            # done when every backlog seq has left the spool.
            nonlocal acked
            rss.append(rss_kib(a.pid))
            s = a.status() or {}
            acked = s.get("uplink", {}).get("readings_acked") or 0
            oldest = s.get("spool", {}).get("oldest_seq")
            return oldest is None or oldest > last_seq

        poll(drained, 900, "the agent to drain its backlog", 0.5)
        c1, t1 = cpu_s(a.pid), time.monotonic()
        rss.append(rss_kib(a.pid))
        end = mem_kib(a.pid)
        return {
            "backlog": start_readings,
            "readings_acked": acked,
            "seconds": round(t1 - t0, 1),
            "readings_per_s": round(acked / (t1 - t0)),
            "cpu_s": round(c1 - c0, 2),
            "cpu_s_per_1000_readings": round((c1 - c0) / max(1, acked) * 1000, 5),
            "rss_kib_at_start": rss[0],
            "rss_kib_max": max(rss),
            "rss_kib_end": rss[-1],
            "rss_kib_peak_VmHWM": end["VmHWM"],
            "end_RssAnon_kib": end["RssAnon"],
        }
    finally:
        a.stop()


def naive_idle(work: Path, info: dict[str, Any], seconds: float) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", "naive_idle", "--params", json.dumps({"info": info})],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("naive idle baseline did not connect")
        return watch(proc.pid, seconds, warmup_s=5.0)
    finally:
        proc.terminate()
        proc.wait(10)


# --- orchestration ---------------------------------------------------------------------------------
def bounds(drain: dict[str, Any]) -> dict[str, Any]:
    """What IoT Core's per-connection limits allow at this run's batch sizes."""
    by_publishes = IOT_PUBLISHES_PER_S * drain["readings_per_publish"]
    by_bytes = IOT_BYTES_PER_S / drain["payload_bytes_per_reading"]
    bound = min(by_publishes, by_bytes)
    return {
        "bound_by_100_publishes_per_s": round(by_publishes),
        "bound_by_512_KiB_per_s": round(by_bytes),
        "bound_readings_per_s": round(bound),
        "binding_limit": "publishes" if by_publishes <= by_bytes else "bytes",
        "achieved_fraction_of_bound": round(drain["readings_per_s"] / bound, 3),
    }


def ratios(d: dict[str, Any], naive: dict[str, Any]) -> dict[str, float]:
    """Agent over the naive baseline with the same client-side limits (on: the SDK's defaults)."""
    out: dict[str, float] = {}
    if "iot_core_bound" in d:
        base = naive["sdk_defaults_sequential"]
        out["readings_per_s_vs_naive_sdk_defaults"] = round(d["readings_per_s"] / base["readings_per_s"], 1)
    else:
        for key in ("limits_off_sequential", "limits_off_window_100"):
            out[f"readings_per_s_vs_naive_{key}"] = round(d["readings_per_s"] / naive[key]["readings_per_s"], 1)
    base_cpu = naive["limits_off_window_100"]["cpu_s_per_1000_readings"]
    out["cpu_per_reading_naive_window_100_over_agent"] = round(base_cpu / max(1e-9, d["cpu_s_per_1000_readings"]), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (smaller spool, backlog, idle window)")
    ap.add_argument("--readings", type=int, help="pre-filled readings per drain (default 200,000; quick 40,000)")
    ap.add_argument("--naive-readings", type=int, help="readings per naive run (default 20,000; quick 4,000)")
    ap.add_argument("--backlog", type=int, help="agent backlog (default 1,000,000; quick 100,000)")
    ap.add_argument("--idle-s", type=float, help="idle/steady window in seconds (default 60; quick 15)")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="where spools go (a real disk)")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.params))))
        return
    q = args.quick
    n_drain = args.readings or (100_000 if q else 200_000)
    n_naive = args.naive_readings or (4_000 if q else 20_000)
    n_backlog = args.backlog or (100_000 if q else 1_000_000)
    idle_s = args.idle_s or (15.0 if q else 60.0)

    from emulator import Emulator

    t_start = time.monotonic()
    report: dict[str, Any] = {"bench": "e2e", "quick": q, "channels": CHANNELS, "topic": TOPIC}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-", dir=args.workdir) as tmp:
        work = Path(tmp)
        (work / "tpl").mkdir()
        drain_tpl = work / "tpl" / "spool.db"
        report["drain_spool"] = fill_spool(drain_tpl, n_drain)
        with Emulator(work / "emu", thing=THING) as emu:
            info = connection_info(emu)
            broker_pid = int((work / "emu" / "broker" / "mosquitto.pid").read_text().strip())

            def measured(kind: str, params: dict[str, Any]) -> dict[str, Any]:
                b0 = cpu_s(broker_pid)
                r = run_child(kind, params)
                r["broker_cpu_s"] = round(cpu_s(broker_pid) - b0, 3)
                return r

            drains: dict[str, Any] = {}
            for limits in (False, True):
                for size in (5120, 128 * 1024):
                    name = f"limits_{'on' if limits else 'off'}_batch_{size}"
                    d = work / name
                    spool = copy_spool(drain_tpl, d)
                    drains[name] = measured("drain", {
                        "info": info, "spool": str(spool), "iot_core_limits": limits, "encoding": "compact",
                        "batch_max_bytes": size, "timeout_s": 600})  # fmt: skip
                    if limits:
                        drains[name]["iot_core_bound"] = bounds(drains[name])
                    shutil.rmtree(d)
            # At 100 publishes/s the limited baseline needs no more than ~10 s to show its rate.
            n_limited = min(n_naive, 1000)
            naive = {
                "sdk_defaults_sequential": measured(
                    "naive", {"info": info, "readings": n_limited, "inflight": 1, "iot_core_limits": True}),
                "limits_off_sequential": measured(
                    "naive", {"info": info, "readings": n_naive, "inflight": 1, "iot_core_limits": False}),
                "limits_off_window_100": measured(
                    "naive", {"info": info, "readings": n_naive, "inflight": 100, "iot_core_limits": False}),
            }  # fmt: skip
            report["throughput_to_puback"] = {
                "encoding": "compact",
                "agent": drains,
                "naive_one_json_message_per_reading": naive,
                "naive_with_iot_core_limits_bound_readings_per_s": IOT_PUBLISHES_PER_S,
                "ratios": {name: ratios(d, naive) for name, d in drains.items()},
                "aim_readings_per_s_limits_off": 50_000,
            }  # fmt: skip

            # The real daemon: steady, then idle baseline, then a large backlog online and offline.
            steady = agent_steady(work / "steady", info, idle_s)
            idle_naive = naive_idle(work / "naive-idle", info, idle_s)
            bl_tpl = work / "tpl-backlog" / "spool.db"
            (work / "tpl-backlog").mkdir()
            bl_fill = fill_spool(bl_tpl, n_backlog)
            # A fresh spool numbers from 1: the backlog is seq 1..readings.
            offline = agent_backlog(work / "offline", None, bl_tpl, bl_fill["readings"], min(idle_s, 30.0))
            online = agent_backlog(work / "online", info, bl_tpl, bl_fill["readings"], 0)
        report["agent_process"] = {
            "config": "8 simulated channels (2 sensors x 4) at 1 Hz, compact, batch_max_bytes 5120, "
                      "iot_core_limits on (the shipped defaults)",
            "steady_connected": steady,
            "naive_idle_baseline_one_json_message_per_reading_8_per_s": idle_naive,
            "idle_cpu_ratio_naive_over_agent": round(
                idle_naive["cpu_percent_of_one_core"] / max(1e-6, steady["cpu_percent_of_one_core"]), 2),
            "backlog_spool": bl_fill,
            "backlog_offline_sampling": offline,
            "backlog_draining_online": online,
            "rss_growth_with_backlog_kib": max(offline["rss_kib_max"], online["rss_kib_peak_VmHWM"])
            - steady["rss_kib_max"],
            "aim_rss_kib": 50 * 1024,
        }  # fmt: skip
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
