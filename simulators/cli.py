"""``anxin simulate``: simulated wristbands against the configured broker."""

from __future__ import annotations

import logging

from core import db
from core.mqtt import client_for
from core.settings import Settings
from devices.registry import ensure_devices
from simulators.wearable import Encoding, WearableFleet, publish_fleet

log = logging.getLogger(__name__)


def simulate(
    settings: Settings,
    *,
    devices: int,
    seconds: int,
    paced: bool,
    encoding: Encoding,
    register: bool,
    prefix_id: str = "sim-wb",
) -> int:
    ids = [f"{prefix_id}-{i:05d}" for i in range(devices)]
    if register:
        db.upgrade(settings.db.url, require_timescale=settings.db.require_timescale)
        with db.connect(settings.db.url) as conn:
            added = ensure_devices(conn, ids)
        log.info("registered %d new simulated devices", added)
    fleet = WearableFleet(ids, encoding=encoding).with_prefix(settings.mqtt.topic_prefix)
    client = client_for(settings.mqtt, client_id=f"{prefix_id}-simulator")
    client.connect_inline()
    report = publish_fleet(client, fleet, seconds=seconds, paced=paced)
    print(
        f"published {report.sent} messages in {report.seconds:.1f} s ({report.rate:.0f} msg/s), "
        f"{report.unacknowledged} unacknowledged"
    )
    return 0 if report.unacknowledged == 0 else 1


def main_scenario(argv: list[str]) -> int:
    """``anxin scenario run|check|list``."""
    import argparse  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    from core.mqtt import MqttError  # noqa: PLC0415
    from core.settings import load_settings  # noqa: PLC0415
    from simulators.runner import RunOptions, run_scenario  # noqa: PLC0415
    from simulators.scenario import library, load_scenario  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="anxin scenario",
        description="Scripted scenarios against a running deployment (docs/simulators.md).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p_run = sub.add_parser(
        "run", help="register, play, wait, compare; exit 1 when the outcome differs"
    )
    p_run.add_argument("files", nargs="+", help="scenario files, or names of the library's")
    p_run.add_argument("--data", type=Path, help="datasets folder for recordings")
    p_run.add_argument(
        "--phones",
        default="json://127.0.0.1:8099/phone",
        help="apprise base URL that replaces {phones} in the care circle's channels",
    )
    p_run.add_argument("--speed", type=float, help="override the scenario's speed")
    p_check = sub.add_parser("check", help="check scenario files without running them")
    p_check.add_argument("files", nargs="+")
    sub.add_parser("list", help="the shipped library")
    args = parser.parse_args(argv)
    if args.action == "list":
        for path in library():
            s = load_scenario(path)
            print(f"{path.stem:28s} {s.name}")
        return 0
    if args.action == "check":
        for name in args.files:
            s = load_scenario(name)
            print(f"{name}: ok ({len(s.timeline)} steps, {len(s.devices)} devices)")
        return 0
    settings = load_settings()
    scenarios = [(name, load_scenario(name)) for name in args.files]  # all checked first
    failed = 0
    for name, scenario in scenarios:
        try:
            result = run_scenario(
                settings,
                scenario,
                RunOptions(data_dir=args.data, phones=args.phones, speed=args.speed),
                title=f"{scenario.name} ({name})",
            )
        except (MqttError, psycopg.OperationalError) as exc:
            print(f"anxin scenario: cannot reach the deployment: {exc}", file=sys.stderr)
            return 2
        print(result.report, flush=True)
        failed += not result.passed
    return 1 if failed else 0
