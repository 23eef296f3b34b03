"""The ``anxin`` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from core.errors import AnxinError

log = logging.getLogger("anxin")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def _cmd_db(args: argparse.Namespace) -> int:
    from core import db  # noqa: PLC0415 - commands import what they use, so --help stays fast
    from core.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    if args.db_command == "upgrade":
        result = db.upgrade(settings.db.url, require_timescale=settings.db.require_timescale)
        applied = ", ".join(f"{v:04d}" for v in result.applied) or "none (up to date)"
        print(f"schema at version {result.current} ({result.mode} mode); applied: {applied}")
        return 0
    info = db.info(settings.db.url)
    print(f"database:   {db.redact_url(settings.db.url)}")
    print(f"server:     PostgreSQL {info.server_version}")
    print(f"timescale:  {info.timescale_version or 'not installed'}")
    print(f"mode:       {info.mode or 'not migrated'}")
    print(f"schema:     version {info.version} of {info.latest}")
    if info.hypertables:
        print(f"hypertables: {', '.join(info.hypertables)}")
    for policy in info.policies:
        print(f"policy:     {policy.table}: {policy.kind} {policy.detail}")
    if info.aggregates:
        kind = "continuous aggregates" if info.mode == "timescale" else "views"
        print(f"{kind}: {', '.join(info.aggregates)}")
    if info.mode == "native":
        print(
            "policies:   none in native mode (no compression; run `anxin db prune` for retention)"
        )
    return 0 if info.version == info.latest else 1


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from core.settings import load_settings  # noqa: PLC0415
    from ingest.runner import run_ingest  # noqa: PLC0415

    settings = load_settings()
    overrides: dict[str, object] = {}
    if args.lane is not None:
        overrides["lane"] = args.lane
    if args.source is not None:
        overrides["source"] = args.source
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if overrides:
        ingest = settings.ingest.model_validate({**settings.ingest.model_dump(), **overrides})
        settings = settings.model_copy(update={"ingest": ingest})
    stop = threading.Event()
    _stop_on_signals(stop)
    run_ingest(settings, stop)
    return 0


SHUTDOWN_GRACE_S = 3


def _cmd_api(_args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from api.app import create_app  # noqa: PLC0415
    from core.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level="info",
        # The screens' live streams stay open for minutes: stopping waits this long for them.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from core.settings import load_settings  # noqa: PLC0415
    from simulators.cli import simulate  # noqa: PLC0415

    settings = load_settings()
    return simulate(
        settings,
        devices=args.devices,
        seconds=args.seconds,
        paced=not args.fast,
        encoding=args.encoding,
        register=args.register,
        prefix_id=args.id_prefix,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from demo.run import run_demo  # noqa: PLC0415

    return run_demo(devices=args.devices, embedded=args.embedded)


def _cmd_devices(args: argparse.Namespace) -> int:
    from core import db  # noqa: PLC0415
    from core.settings import load_settings  # noqa: PLC0415
    from devices.registry import register_device, set_status  # noqa: PLC0415

    settings = load_settings()
    with db.connect(settings.db.url) as conn:
        if args.devices_command == "add":
            new = register_device(conn, args.device_id, args.kind, gateway_id=args.gateway)
            print(f"registered {new.device_id} ({new.kind})")
            if new.secret:
                print(f"secret (shown once, store it in the device): {new.secret}")
        elif args.devices_command == "retire":
            set_status(conn, args.device_id, "retired")
            print(f"retired {args.device_id}")
    return 0


def _cmd_delegated(args: argparse.Namespace) -> int:
    """Listed in --help; main() hands these commands their arguments before argparse runs."""
    return (
        _delegated(
            [
                args.command,
                *([args.devices_command] if args.command == "devices" else []),
                *args.rest,
            ]
        )
        or 0
    )


def _add_delegated(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    """A command listed in --help whose own parser takes its arguments (see :func:`_delegated`)."""
    p = subparsers.add_parser(name, help=help_text, add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_delegated)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anxin", description="Anxin: smart home care backend.")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_db = sub.add_parser("db", help="database schema")
    db_sub = p_db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply pending migrations (idempotent)")
    db_sub.add_parser("info", help="storage mode, schema version, hypertables and policies")
    p_db.set_defaults(func=_cmd_db)

    p_ingest = sub.add_parser("ingest", help="run the MQTT ingester until Ctrl-C")
    p_ingest.add_argument(
        "--lane",
        choices=("all", "telemetry", "urgent"),
        help="what this process takes (default ANXIN_INGEST__LANE, all): run one urgent and one "
        "telemetry process side by side so an SOS never waits for telemetry",
    )
    p_ingest.add_argument(
        "--source",
        choices=("mqtt", "engine"),
        help="mqtt: subscribe to the broker (default ANXIN_INGEST__SOURCE, mqtt); engine: read "
        "the partitions of the clustered engine this ingester owns (ANXIN_ENGINE__*)",
    )
    p_ingest.add_argument(
        "--metrics-port",
        type=int,
        help="port of this process's /metrics (default ANXIN_INGEST__METRICS_PORT, 9108); "
        "give the second process on a machine its own",
    )
    p_ingest.set_defaults(func=_cmd_ingest)

    p_api = sub.add_parser("api", help="serve the HTTP API and the console until Ctrl-C")
    p_api.set_defaults(func=_cmd_api)

    p_sim = sub.add_parser(
        "simulate", help="simulated wristbands publishing vitals and accelerometer bursts"
    )
    p_sim.add_argument("--devices", type=int, default=10)
    p_sim.add_argument("--seconds", type=int, default=60)
    p_sim.add_argument(
        "--fast", action="store_true", help="as fast as the broker takes them, not real time"
    )
    p_sim.add_argument("--encoding", choices=["i16", "json"], default="i16")
    p_sim.add_argument(
        "--register", action="store_true", help="register the simulated devices first"
    )
    p_sim.add_argument("--id-prefix", default="sim-wb")
    p_sim.set_defaults(func=_cmd_simulate)

    p_demo = sub.add_parser("demo", help="services, simulators and what they store, until Ctrl-C")
    p_demo.add_argument("--devices", type=int, default=20)
    p_demo.add_argument(
        "--embedded",
        choices=["auto", "always", "never"],
        default="auto",
        help="start an embedded PostgreSQL and broker when none is reachable (auto)",
    )
    p_demo.set_defaults(func=_cmd_demo)

    p_dev = sub.add_parser("devices", help="device registry")
    dev_sub = p_dev.add_subparsers(dest="devices_command", required=True)
    p_add = dev_sub.add_parser("add", help="register a device; prints its secret once")
    p_add.add_argument("device_id")
    p_add.add_argument("--kind", default="wristband")
    p_add.add_argument("--gateway", default=None)
    p_ret = dev_sub.add_parser("retire", help="retire a device: its messages are refused")
    p_ret.add_argument("device_id")
    p_dev.set_defaults(func=_cmd_devices)
    _add_delegated(
        dev_sub,
        "broker-auth",
        "write Mosquitto's password and ACL files from the registry (see --help)",
    )
    _add_delegated(dev_sub, "rotate", "new secret for a device, shown once")
    _add_delegated(dev_sub, "revoke", "revoke a device's credentials")
    _add_delegated(
        sub, "alerts", "alerts worker: deliveries (apprise, 120 hand-off) and escalation"
    )
    _add_delegated(sub, "tokens", "API tokens: create --role R --name N, list, revoke ID")
    _add_delegated(sub, "report", "reports: monthly --community C --month M")
    _add_delegated(
        sub,
        "scenario",
        "scripted scenarios: run FILE (against a running deployment), check FILE, list",
    )
    _add_delegated(sub, "load", "N devices of a mix of kinds with the bare publisher (see --help)")
    _add_delegated(sub, "detectors", "detector tools (evaluate-falls ...)")
    return parser


def _alerts_worker(argv: list[str]) -> int:
    """``anxin alerts worker``: the outbox delivery worker, the escalation clock and the home
    visit reminders, until a signal. Both are safe to run in several processes (rows are claimed with SKIP LOCKED)."""
    from alerts.delivery import run_worker  # noqa: PLC0415
    from alerts.escalation import run_escalation  # noqa: PLC0415
    from alerts.service import AlertService, PostgresDirectory  # noqa: PLC0415
    from alerts.visit_reminders import run_visit_reminders  # noqa: PLC0415
    from core import db  # noqa: PLC0415
    from core.clock import SystemClock  # noqa: PLC0415
    from core.settings import load_settings  # noqa: PLC0415
    from devices.crypto import Keyring  # noqa: PLC0415
    from devices.repository import channel_opener  # noqa: PLC0415

    argparse.ArgumentParser(
        prog="anxin alerts worker", description=_alerts_worker.__doc__
    ).parse_args(argv)
    settings = load_settings()
    db.upgrade(settings.db.url, require_timescale=settings.db.require_timescale)
    stop = threading.Event()
    _stop_on_signals(stop)
    directory = PostgresDirectory(
        settings.alerts.sms_url, opener=channel_opener(Keyring.from_settings(settings.registry))
    )
    escalation = threading.Thread(
        target=run_escalation,
        args=(
            lambda: db.connect(settings.db.url, autocommit=True),
            AlertService(settings.alerts, directory),
            SystemClock(),
            stop,
            settings.alerts.escalation_every_s,
        ),
        name="alert-escalation",
    )
    escalation.start()
    reminders: threading.Thread | None = None
    if settings.alerts.visit_reminder_every_s > 0:
        reminders = threading.Thread(
            target=run_visit_reminders,
            args=(
                lambda: db.connect(settings.db.url, autocommit=True),
                directory,
                SystemClock(),
                stop,
                settings.alerts.visit_reminder_every_s,
            ),
            name="visit-reminders",
        )
        reminders.start()
    try:
        run_worker(settings, stop)
    finally:
        stop.set()
        escalation.join(30)
        if reminders is not None:
            reminders.join(30)
    return 0


def _delegated(argv: list[str]) -> int | None:
    """Commands with parsers of their own get their arguments untouched (``--help`` included)."""
    if argv[:2] == ["devices", "broker-auth"]:
        from devices.credentials import main_broker_auth  # noqa: PLC0415

        return main_broker_auth(argv[2:])
    if argv[:2] in (["devices", "rotate"], ["devices", "revoke"]):
        from devices.credentials import main_credentials  # noqa: PLC0415

        return main_credentials(argv[1:])
    if argv[:2] == ["alerts", "worker"]:
        return _alerts_worker(argv[2:])
    if argv[:1] == ["tokens"]:
        from devices.access import main_tokens  # noqa: PLC0415

        return main_tokens(argv[1:])
    if argv[:1] == ["report"]:
        from api.report_cli import main_report  # noqa: PLC0415

        return main_report(argv[1:])
    if argv[:1] == ["scenario"]:
        from simulators.cli import main_scenario  # noqa: PLC0415

        return main_scenario(argv[1:])
    if argv[:1] == ["load"]:
        from simulators.load import main_load  # noqa: PLC0415

        return main_load(argv[1:])
    if argv[:2] == ["detectors", "evaluate-falls"]:
        from detectors import evaluation  # noqa: PLC0415

        return int(evaluation.main(argv[2:]))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if args_list and not args_list[0].startswith("-"):
        _setup_logging("INFO")
        try:
            delegated = _delegated(args_list)
        except AnxinError as exc:
            print(f"anxin: {exc}", file=sys.stderr)
            return 2
        if delegated is not None:
            return delegated
    args = parser.parse_args(args_list)
    _setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except AnxinError as exc:
        print(f"anxin: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
