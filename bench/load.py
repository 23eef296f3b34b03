"""``anxin load`` with scenarios inside, against a whole deployment on this machine.

A private Mosquitto with the project's configuration, a fresh database, the ingester as the
two processes docs/operations.md recommends (``--lane urgent`` and ``--lane telemetry``),
``anxin alerts worker``, and the demo's stand-in for the 120 centre and the phones; then

    anxin load --devices N --seconds S --register --scenario ... (as a load engineer runs it)

and, afterwards, how many of the load's messages the ingester stored.

    .venv/bin/python bench/load.py --devices 10000 --seconds 60 --scenario sos --scenario sos
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.receiver import DemoReceiver  # noqa: E402
from tests.ingest.test_fault_injection import _Worker, services_env  # noqa: E402
from tests.services import ADMIN_URL, IngestProcess, PrivateBroker, fresh_database  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--scenario", action="append", default=[])
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="anxin-bench-load-"))
    broker = PrivateBroker()
    broker.start()
    secret = secrets.token_hex(16)
    try:
        with fresh_database(ADMIN_URL) as url, DemoReceiver(secret) as receiver:
            env = services_env(
                url, broker.url, receiver.dispatch120_url, "load",
                ANXIN_ALERTS__DISPATCH120_SECRET=secret,
                ANXIN_ALERTS__OPERATOR_URL=receiver.phone_url("operator"),
                ANXIN_INGEST__REGISTRY_REFRESH_S="2",
            )  # fmt: skip
            urgent = IngestProcess(
                {**env, "ANXIN_MQTT__CLIENT_ID": env["ANXIN_MQTT__CLIENT_ID"] + "-u"},
                logs / "urgent.log",
                ("--lane", "urgent"),
            )
            telemetry = IngestProcess(env, logs / "telemetry.log", ("--lane", "telemetry"))
            worker = _Worker(env, logs / "worker.log")
            urgent.start()
            telemetry.start()
            worker.start()
            try:
                cmd = [
                    sys.executable, "-m", "api.cli", "load",
                    "--devices", str(args.devices), "--seconds", str(args.seconds),
                    "--processes", str(args.processes), "--register",
                    "--phones", receiver.phone_url("").rstrip("/"),
                    *[x for name in args.scenario for x in ("--scenario", name)],
                ]  # fmt: skip
                started = time.monotonic()
                done = subprocess.run(
                    cmd, env=env, cwd=ROOT, text=True, capture_output=True, check=False
                )
                print(done.stdout)
                print(done.stderr[-3000:], file=sys.stderr)
                print(
                    f"anxin load exited {done.returncode} after {time.monotonic() - started:.0f} s"
                )
                time.sleep(10)  # the ingester drains what the broker still holds
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        """SELECT (SELECT count(*) FROM battery_readings WHERE device_id LIKE 'load-%'),
                                  (SELECT count(*) FROM bed_readings WHERE device_id LIKE 'load-%'),
                                  (SELECT count(*) FROM dead_letters)"""
                    ).fetchone()
                assert row is not None
                print(
                    f"stored by the ingester: {row[0] + row[1]} of the load's messages; dead letters {row[2]}"
                )
                return done.returncode
            finally:
                urgent.stop()
                telemetry.stop()
                worker.stop()
    finally:
        broker.close()


if __name__ == "__main__":
    sys.exit(main())
