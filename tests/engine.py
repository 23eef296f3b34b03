"""A NATS JetStream cluster of the test's own (nats-server on free ports), with the project's
partition mapping (deploy/nats/mapping.conf) and MQTT for the devices on every node."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from core.engine import EngineError, EngineLink, EngineMisconfigured
from core.mqtt import MqttClient, MqttError
from core.settings import EngineSettings
from tests.services import free_port, port_open, wait_until

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "deploy" / "nats" / "mapping.conf"


class EngineNode:
    def __init__(self, cluster: EngineCluster, index: int) -> None:
        self.cluster = cluster
        self.name = f"n{index}"
        self.port = free_port()
        self.mqtt_port = free_port()
        self.route_port = free_port()
        self.http_port = free_port()
        self.dir = cluster.dir / self.name
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        shutil.copy(MAPPING, self.dir / "mapping.conf")
        routes = ", ".join(
            f"nats-route://127.0.0.1:{n.route_port}" for n in self.cluster.nodes if n is not self
        )
        cluster = ""
        if len(self.cluster.nodes) > 1:
            cluster = (
                f"cluster {{ name: anxin-test, listen: 127.0.0.1:{self.route_port}, "
                f"routes: [{routes}] }}"
            )
        config = self.dir / "node.conf"
        config.write_text(
            f"""server_name: {self.name}
listen: 127.0.0.1:{self.port}
http: 127.0.0.1:{self.http_port}
jetstream {{ store_dir: "{self.dir / "js"}" }}
mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, stream_replicas: {self.cluster.replicas} }}
{cluster}
include "mapping.conf"
"""
        )
        return config

    def start(self) -> None:
        config = self.write_config()
        with open(self.dir / "node.log", "ab") as log:
            self.proc = subprocess.Popen(["nats-server", "-c", str(config)], stdout=log, stderr=log)
        wait_until(lambda: port_open("127.0.0.1", self.mqtt_port, 0.2), 20, f"{self.name} up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(15)
        self.proc = None

    def mqtt_answers(self) -> bool:
        client = MqttClient(
            host="127.0.0.1", port=self.mqtt_port, client_id=f"probe-{self.name}",
            protocol_v5=False,
        )  # fmt: skip
        try:
            client.connect_inline(timeout_s=5)
        except MqttError:
            return False
        finally:
            client.stop()
        return True

    def _jsz(self, query: str = "") -> dict[str, Any] | None:
        """The node's JetStream monitoring page; None while it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/jsz{query}", timeout=2
            ) as resp:
                info: dict[str, Any] = json.load(resp)
        except OSError:
            return None
        return info

    def leader_of(self, stream: str) -> str | None:
        """The name of the node leading ``stream`` (its RAFT group), as this node sees it."""
        info = self._jsz("?streams=true")
        if info is None:
            return None
        for account in info.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    return (detail.get("cluster") or {}).get("leader")
        return None

    def jetstream_ready(self) -> bool:
        info = self._jsz()
        if info is None:
            return False
        meta = info.get("meta_cluster") or {}
        return len(self.cluster.nodes) == 1 or bool(meta.get("leader"))


class EngineCluster:
    """``size`` nats-server nodes routed to each other, JetStream on each."""

    def __init__(self, size: int = 1) -> None:
        if shutil.which("nats-server") is None:
            raise RuntimeError("the nats-server binary is not installed")
        self.dir = Path(tempfile.mkdtemp(prefix="anxin-nats-"))
        self.nodes: list[EngineNode] = []
        self.nodes = [EngineNode(self, i + 1) for i in range(size)]

    @property
    def replicas(self) -> int:
        """Copies of the engine's MQTT streams: three, or every node of a smaller cluster."""
        return min(3, len(self.nodes))

    @property
    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        wait_until(
            lambda: all(n.jetstream_ready() for n in self.nodes), 60, "the JetStream cluster"
        )
        # The engine's MQTT stream, as the first ingester makes it before any device connects
        # (docs/operations.md); the engine would otherwise make it at the first MQTT client.
        link = EngineLink([n.url for n in self.nodes], name="anxin-test-prepare").connect()
        try:
            wait_until(lambda: self._prepare(link), 60, "the engine's MQTT stream")
        finally:
            link.close()
        # The first MQTT client makes the engine create its MQTT session streams, which takes
        # a while in a cluster: devices connect after that, as they would to a running engine.
        wait_until(lambda: all(n.mqtt_answers() for n in self.nodes), 90, "MQTT on every node")

    def _prepare(self, link: EngineLink) -> bool:
        try:
            link.ensure_mqtt_stream(self.replicas, **EngineSettings().stream_limits)
        except EngineMisconfigured:
            raise
        except EngineError:
            return False  # the cluster is still electing its leaders
        return True

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
                try:
                    node.proc.wait(15)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def partition_owners(db_url: str) -> dict[int, int]:
    """Backend pid -> partitions it holds (the advisory locks of the partitioned ingest)."""
    ns = EngineSettings().lock_namespace
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """SELECT pid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND objsubid = 2 AND classid::bigint = %s GROUP BY pid""",
            (ns,),
        ).fetchall()
    return {int(pid): int(n) for pid, n in rows}
