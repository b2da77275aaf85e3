"""``methane-agent fleet simulate``: run N simulated gateways (the real agent pipeline each, hosted
in ``--agent-workers`` processes) against the emulator or a real IoT Core account, print a live view,
write the report."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from fleet.profiles import Endpoint
from fleet.simulator import (
    SCENARIOS,
    FleetSimulator,
    Options,
    SimulationError,
    default_agent_workers,
    render_text,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("fleet", help="simulate a fleet of gateways (load test)")
    fsub = parser.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    sim = fsub.add_parser("simulate", help="run N simulated gateways and report", description=__doc__)
    target = sim.add_argument_group("target (one of)")
    target.add_argument("--emulator-dir", type=Path, default=None,
                        help="state dir of the local IoT Core the simulator runs itself (created if missing)")
    target.add_argument("--endpoint", default=None, help="real IoT Core data endpoint (host[:port])")
    target.add_argument("--claim-cert", type=Path, default=None, help="fleet claim certificate (real AWS)")
    target.add_argument("--claim-key", type=Path, default=None, help="fleet claim key (real AWS)")
    target.add_argument("--ca", type=Path, default=None, help="CA bundle for the endpoint (real AWS)")
    target.add_argument("--template", default="methane-fleet", help="provisioning template (real AWS)")
    sim.add_argument("--devices", type=int, required=True, help="number of gateways")
    sim.add_argument("--duration", type=float, default=60.0, metavar="SECONDS",
                     help="steady-state measurement window (default 60)")
    sim.add_argument("--scenario", action="append", choices=SCENARIOS, dest="scenarios", default=None,
                     help="repeatable; default: all (cold-start and completeness always run)")
    sim.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    sim.add_argument("--workdir", type=Path, default=None,
                     help="gateways' config, spool and identity (default: <emulator-dir>/fleet or a temp dir)")
    sim.add_argument("--provision-parallel", type=int, default=4,
                     help="worker processes provisioning gateways at once (default 4)")
    sim.add_argument("--agent-workers", type=int, default=None,
                     help="processes hosting the agents, each on its own event loop (default: one per CPU)")
    sim.add_argument("--batch-max-age", type=float, default=60.0, help="gateways' uplink.batch_max_age_s")
    sim.add_argument("--max-reconnect-delay-ms", type=int, default=30_000, help="gateways' reconnect backoff bound")
    sim.add_argument("--min-reconnect-delay-ms", type=int, default=None,
                     help="gateways' first reconnect window (default: the agent's, 10000)")
    sim.add_argument("--outage", type=float, default=10.0, help="broker-restart: seconds the broker stays down")
    sim.add_argument("--rollout-per-minute", type=int, default=600, help="rollout: maximumPerMinute (1-1000)")
    sim.add_argument("--legacy-fraction", type=float, default=0.2,
                     help="share of gateways on the legacy profile, which refuses the rollout's config")
    sim.add_argument("--abort-threshold", type=float, default=10.0, help="rollout: abort threshold in percent")
    sim.add_argument("--progress", type=float, default=5.0, help="seconds between live progress lines")
    sim.add_argument("--seed", type=int, default=1)
    sim.set_defaults(func=simulate_cmd)


def _aws(args: argparse.Namespace) -> Endpoint | None:
    if args.endpoint is None:
        return None
    if args.claim_cert is None or args.claim_key is None:
        raise SimulationError("--endpoint needs --claim-cert and --claim-key")
    host, _, port = args.endpoint.partition(":")
    return Endpoint(host, int(port or 8883), args.ca, args.claim_cert, args.claim_key, args.template)


def simulate_cmd(args: argparse.Namespace) -> int:
    try:
        if args.agent_workers is not None and args.agent_workers < 1:
            raise SimulationError("--agent-workers must be at least 1")
        if args.devices < 1 or args.duration < 0 or not 0 <= args.legacy_fraction < 1:
            raise SimulationError("--devices >= 1, --duration >= 0 and 0 <= --legacy-fraction < 1 are required")
        aws = _aws(args)
        workdir = args.workdir or (args.emulator_dir / "fleet" if args.emulator_dir else
                                   Path(tempfile.mkdtemp(prefix="methane-fleet-")))
        opts = Options(
            devices=args.devices, duration_s=args.duration, scenarios=args.scenarios or list(SCENARIOS),
            workdir=workdir, emulator_dir=args.emulator_dir, aws=aws, provision_parallel=args.provision_parallel,
            batch_max_age_s=args.batch_max_age, max_reconnect_delay_ms=args.max_reconnect_delay_ms,
            min_reconnect_delay_ms=args.min_reconnect_delay_ms,
            outage_s=args.outage, rollout_per_minute=args.rollout_per_minute, legacy_fraction=args.legacy_fraction,
            abort_threshold_percent=args.abort_threshold, seed=args.seed, progress_s=args.progress,
            agent_workers=args.agent_workers or default_agent_workers(),
        )
        report = FleetSimulator(opts).run()
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_text(report))
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    ok = report.get("provisioned") == report["devices"] and report.get("readings_lost") == 0
    return 0 if ok else 1
