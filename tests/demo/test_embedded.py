"""The demo's embedded fallbacks (demo.embedded, demo.embedded_postgres, demo.embedded_broker), tested here because the demo is their user."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import psycopg
import pytest

from core.mqtt import IncomingMessage, MqttClient
from demo import embedded_postgres
from demo.embedded import (
    PostgresProbe,
    free_port,
    probe_postgres,
    reachable_broker,
    reachable_postgres,
)
from demo.embedded_broker import EmbeddedBroker
from demo.embedded_postgres import start_embedded_postgres


def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.02)


def test_probes_find_nothing_on_a_closed_port() -> None:
    port = free_port()
    assert not reachable_broker("127.0.0.1", port, timeout=1)
    assert not reachable_postgres(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=1)
    assert (
        probe_postgres(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=1)[0]
        is PostgresProbe.UNREACHABLE
    )


def test_amqtt_keeps_a_persistent_session_with_manual_acks() -> None:
    """What the ingester needs: MQTT 3.1.1, QoS 1, clean_session=False, PUBACK after commit,
    and the messages sent while it was away delivered when it comes back."""
    with EmbeddedBroker() as broker:
        assert reachable_broker("127.0.0.1", broker.port)
        got: list[IncomingMessage] = []

        def ingester(*, new_session: bool) -> MqttClient:
            client = MqttClient(
                host="127.0.0.1",
                port=broker.port,
                client_id="t-ingest",
                persistent=True,
                manual_ack=True,
                protocol_v5=False,
            )
            client.on_message(got.append)
            mids: list[int | None] = []
            client.on_connect(lambda _present: mids.append(client.subscribe(["t/#"], qos=1)))
            client.connect()
            if new_session:
                # A kept session has the subscription already, and this broker answers the
                # repeated SUBSCRIBE only after the messages it replays are acknowledged.
                _wait_for(lambda: bool(mids))
                assert client.wait_subscribed(mids[0], 30), "the broker did not grant t/#"
            return client

        sub = ingester(new_session=True)
        pub = MqttClient(host="127.0.0.1", port=broker.port, client_id="t-pub", protocol_v5=False)
        pub.connect_inline()

        def publish(n: int, tag: str) -> None:
            for i in range(n):
                pub.publish(f"t/{tag}/{i}", f"{tag}{i}".encode(), qos=1)
            deadline = time.monotonic() + 5
            while pub.pending_out() and time.monotonic() < deadline:
                pub.pump(0.01)
            assert pub.pending_out() == 0

        publish(100, "a")
        _wait_for(lambda: len(got) == 100)
        # All delivered before any PUBACK: no in-flight window of one.
        assert sorted(m.payload for m in got) == sorted(f"a{i}".encode() for i in range(100))
        assert all(m.qos == 1 for m in got)
        sub.ack_many([m.mid for m in got])
        time.sleep(0.2)
        sub.stop()
        got.clear()

        publish(20, "b")  # while the ingester is away
        sub = ingester(new_session=False)
        _wait_for(lambda: len(got) == 20)
        assert sorted(m.payload for m in got) == sorted(f"b{i}".encode() for i in range(20))
        sub.ack_many([m.mid for m in got])
        time.sleep(0.2)
        sub.stop()
        pub.stop()
    assert not reachable_broker("127.0.0.1", broker.port, timeout=1)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_embedded_postgres_runs_from_a_private_folder_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout in root's home (mode 0700): the server the demo falls back to still starts."""
    private = tmp_path / "home"
    package = embedded_postgres._bin_dir().parent.parent  # the installed wheel's layout, copied
    shutil.copytree(package, private / package.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / libs.name, symlinks=True)
    private.chmod(0o700)
    monkeypatch.setattr(
        embedded_postgres, "_bin_dir", lambda: private / package.name / "pginstall" / "bin"
    )
    with start_embedded_postgres() as server:
        with psycopg.connect(server.url) as conn:
            (one,) = conn.execute("SELECT 1").fetchone()  # type: ignore[misc]
        assert one == 1
        assert server.run_as is not None


@pytest.mark.slow
def test_embedded_postgres_runs_even_as_root() -> None:
    with start_embedded_postgres() as server:
        with psycopg.connect(server.url) as conn:
            (user,) = conn.execute("SELECT current_user").fetchone()  # type: ignore[misc]
            assert user == "postgres"
            conn.execute("CREATE TABLE t (x int)")
        data_dir = server.data_dir
        assert data_dir is not None
        assert data_dir.exists()
    assert not data_dir.exists()
    assert not reachable_postgres(server.url, timeout=1)
