"""Ingest benchmark: simulated wearables through the real broker into PostgreSQL.

Each message is one device-second: vitals plus a 50 Hz three-axis accelerometer burst and a
battery level (three rows). Run from the repository root::

    .venv/bin/python bench/ingest.py --devices 2000 --seconds 20

Two measurements, each in the same run for Anxin's ingester and the naive baseline
(bench/naive_ingest.py: one INSERT and commit per message) on the same broker and schema:

1. Capacity: a backlog of devices x seconds messages waits at the broker for the
   ingester's persistent session; the ingester is started and the time until every reading
   is stored is measured (sustained messages/s with zero loss; the publisher cannot be the
   bottleneck). Repeated ``--repeat`` times; medians reported.
2. Latency: ``--live-devices`` devices publish one message each per second in real time for
   ``--live-seconds`` while the ingester runs; p50/p99 from the device timestamp (stamped at
   publish) to the commit, from the ingester's histogram (bucket-interpolated, as PromQL's
   histogram_quantile), and zero loss checked.

The broker is a private Mosquitto with the project's configuration (deploy/mosquitto).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices.registry import ensure_devices  # noqa: E402
from ingest.metrics import bucket_quantile  # noqa: E402
from simulators.rawmqtt import RawPublisher  # noqa: E402
from simulators.wearable import WearableFleet, publish_fleet  # noqa: E402
from tests.services import ADMIN_URL, PrivateBroker, free_port, fresh_database, wait_until  # noqa: E402


def _publish_part(
    broker_port: int, prefix: str, ids: list[str], seconds: int, encoding: str, paced: bool
) -> int:
    # The simulated devices' own CPU is not the system under test: a bare publisher.
    client = RawPublisher("127.0.0.1", broker_port, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    client.connect_inline()
    fleet = WearableFleet(ids, encoding=encoding).with_prefix(prefix)  # type: ignore[arg-type]
    report = publish_fleet(client, fleet, seconds=seconds, paced=paced)
    client.stop()
    return report.unacknowledged


def publish(
    broker: PrivateBroker,
    prefix: str,
    ids: list[str],
    seconds: int,
    encoding: str,
    *,
    paced: bool,
    processes: int,
) -> None:
    parts = [ids[i::processes] for i in range(processes)]
    with mp.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(
            _publish_part, [(broker.port, prefix, p, seconds, encoding, paced) for p in parts]
        )
    assert sum(results) == 0, "the broker did not acknowledge every publish"


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM vitals").fetchone()
    return int(row[0]) if row else 0


def distinct(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(DISTINCT (device_id, seq)) FROM vitals").fetchone()
    return int(row[0]) if row else 0


class Ingester:
    def __init__(
        self,
        kind: str,
        db_url: str,
        broker: PrivateBroker,
        prefix: str,
        log: Path,
        metrics_port: int = 0,
    ) -> None:
        self.kind = kind
        self.env = {
            **os.environ,
            "ANXIN_DB__URL": db_url,
            "ANXIN_MQTT__URL": broker.url,
            "ANXIN_MQTT__TOPIC_PREFIX": prefix,
            "ANXIN_MQTT__CLIENT_ID": f"bench-{kind}-{uuid.uuid4().hex[:6]}",
            "ANXIN_INGEST__METRICS_PORT": str(metrics_port),
            "ANXIN_INGEST__LOG_EVERY_S": "2",
            "ANXIN_INGEST__DETECTION": "true" if kind in {"ingest+detect", "live"} else "false",
        }
        self.metrics_port = metrics_port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "api.cli", "ingest"]
        if self.kind == "naive":
            cmd = [sys.executable, str(ROOT / "bench" / "naive_ingest.py")]
        before = self.log.read_bytes().count(b"subscribed to") if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=out, cwd=ROOT)
        wait_until(
            lambda: self.log.read_bytes().count(b"subscribed to") > before,
            60,
            f"the {self.kind} ingester",
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def quantiles(self) -> tuple[float, float]:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        buckets = []
        for line in text.splitlines():
            if line.startswith("anxin_ingest_device_to_commit_seconds_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        return bucket_quantile(buckets, 0.5), bucket_quantile(buckets, 0.99)


def capacity(
    kind: str,
    encoding: str,
    devices: int,
    seconds: int,
    broker: PrivateBroker,
    workdir: Path,
    processes: int,
) -> float:
    """Messages/s to drain a backlog of devices x seconds, every reading stored once."""
    with fresh_database(ADMIN_URL) as url:
        ids = [f"bench-wb-{i:05d}" for i in range(devices)]
        with psycopg.connect(url) as conn:
            ensure_devices(conn, ids)
        prefix = f"bench-{uuid.uuid4().hex[:6]}/v1"
        ingester = Ingester(
            kind, url, broker, prefix, workdir / f"{kind}-{encoding}-{uuid.uuid4().hex[:4]}.log"
        )
        ingester.start()  # registers the persistent session and its subscription
        ingester.stop()
        publish(broker, prefix, ids, seconds, encoding, paced=False, processes=processes)
        expected = devices * seconds
        started = time.perf_counter()
        ingester.start()
        ready = time.perf_counter()
        wait_until(
            lambda: stored(url) >= expected, 900, f"{expected} readings ({kind})", interval=0.05
        )
        elapsed = time.perf_counter() - ready
        ingester.stop()
        assert distinct(url) == stored(url) == expected, "lost or doubled readings"
        del started
        return expected / elapsed


def live(
    devices: int, seconds: int, encoding: str, broker: PrivateBroker, workdir: Path, processes: int
) -> tuple[float, float, int]:
    with fresh_database(ADMIN_URL) as url:
        ids = [f"live-wb-{i:05d}" for i in range(devices)]
        with psycopg.connect(url) as conn:
            ensure_devices(conn, ids)
        prefix = f"live-{uuid.uuid4().hex[:6]}/v1"
        ingester = Ingester(
            "live", url, broker, prefix, workdir / "live.log", metrics_port=free_port()
        )
        ingester.start()
        try:
            publish(broker, prefix, ids, seconds, encoding, paced=True, processes=processes)
            wait_until(lambda: stored(url) >= devices * seconds, 120, "the live readings")
            p50, p99 = ingester.quantiles()
            n = distinct(url)
        finally:
            ingester.stop()
        assert n == stored(url) == devices * seconds, "lost or doubled readings"
        return p50, p99, n


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument(
        "--seconds", type=int, default=20, help="device-seconds of backlog per device"
    )
    parser.add_argument(
        "--naive-seconds", type=int, default=3, help="the naive baseline drains a smaller backlog"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--live-devices", type=int, default=5000)
    parser.add_argument("--live-seconds", type=int, default=30)
    parser.add_argument("--publishers", type=int, default=2)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="anxin-bench-"))
    broker = PrivateBroker()
    broker.start()
    # "ingest": validation, dead-lettering, deduplication, acknowledgement after commit;
    # "ingest+detect": the same with the detectors running on every batch (the default).
    results: dict[str, list[float]] = {
        "ingest i16": [],
        "ingest json": [],
        "ingest+detect i16": [],
        "naive i16": [],
    }
    try:
        for round_ in range(args.repeat):
            for name, runs in results.items():
                kind, enc = name.split()
                secs = args.naive_seconds if kind == "naive" else args.seconds
                rate = capacity(kind, enc, args.devices, secs, broker, workdir, args.publishers)
                runs.append(rate)
                print(
                    f"round {round_ + 1}: {name:11s} {rate:9.0f} msg/s ({args.devices} devices x {secs} s)",
                    flush=True,
                )
        p50, p99, n = live(
            args.live_devices, args.live_seconds, "i16", broker, workdir, args.publishers
        )
    finally:
        broker.close()

    med = {k: statistics.median(v) for k, v in results.items()}
    ratios = [a / b for a, b in zip(results["ingest i16"], results["naive i16"], strict=True)]
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as info:
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    print()
    print(f"machine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}")
    print("| pipeline | sustained msg/s (median) | readings/s stored (3 rows/msg) | runs |")
    print("|---|---:|---:|---|")
    for name, rates in results.items():
        print(
            f"| {name} | {med[name]:,.0f} | {3 * med[name]:,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} |"
        )
    print(
        f"\ningest i16 / naive i16, per round: {', '.join(f'{r:.1f}x' for r in ratios)} (median {statistics.median(ratios):.1f}x)"
    )
    print(
        f"live: {args.live_devices} devices x 1 msg/s for {args.live_seconds} s: {n} readings stored once; "
        f"publish-to-commit p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
