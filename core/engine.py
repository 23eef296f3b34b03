"""NATS JetStream, the clustered engine of the partitioned ingest: the only importer of nats-py.

Devices keep speaking MQTT to the engine's MQTT listener. The engine maps each device topic to
a partition by the device id (``anxin.v1.dev.<id>.<channel>`` becomes
``anxin.part.<p>.<id>.<channel>`` by its subject mapping ``{{partition(P,1)}}``, the FNV-1a hash
of the id modulo P, :func:`partition_of`), a stream keeps every partition's messages replicated
over the cluster, and one durable pull consumer per partition hands them to whichever ingester
owns that partition. Acknowledgement is cumulative (``AckPolicy.ALL``): acknowledging the last
message of a committed batch acknowledges the batch.

nats-py is asyncio; the ingester is threaded. :class:`EngineLink` runs the client's event loop
in a thread of its own and offers blocking calls (each waits for its coroutine on that loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from core.errors import AnxinError

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = [
    "EngineError",
    "EngineLink",
    "EngineMessage",
    "PartitionConsumer",
    "partition_of",
    "partition_subject",
]


class EngineError(AnxinError):
    """The engine did not answer, or refused a request."""


def partition_of(device_id: str, partitions: int) -> int:
    """The partition the engine's ``{{partition(P,1)}}`` mapping gives a device: FNV-1a (32 bit)
    of the id's bytes modulo ``partitions`` (nats-server ``subject_transform.go``)."""
    h = 0x811C9DC5
    for byte in device_id.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def partition_subject(root: str, partition: int | str) -> str:
    """Every subject of one partition (``root`` is the mapped subjects' first token)."""
    return f"{root}.{partition}.>"


def _stream_seq(msg: Msg) -> int:
    """The message's sequence in the stream, from its acknowledgement subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...``; nats-py's ``metadata`` parses
    the whole of it into objects, per message)."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5])
    return int(msg.metadata.sequence.stream)


@dataclass(frozen=True, slots=True)
class EngineMessage:
    subject: str
    data: bytes
    stream_seq: int


class PartitionConsumer:
    """One partition's durable pull consumer, for the one ingester that owns it.

    The pull requests are ours, not nats-py's ``fetch`` (which can stall past its timeout on
    an orphaned request: nats-py issues 933 and 986): one request is open at a time, on an inbox
    of this consumer's own. What the engine sends arrives on the link's loop and waits, in
    order, for the reader's thread, which takes it without a trip through the loop; a request is
    over when its batch has come, or at its expiry (the engine's 408).
    """

    def __init__(self, link: EngineLink, nc: Client, api: str, name: str) -> None:
        self._link = link
        self._nc = nc
        self._api = api
        self.name = name
        self.sub: Any = None
        self._arrived: deque[Msg] = deque()
        self._ready = threading.Event()
        self._open_until = 0.0  # monotonic time the open request expires; 0: none open
        self._due = 0  # messages the open request may still bring
        self._last: Msg | None = None

    async def on_message(self, msg: Msg) -> None:
        """On the link's loop: keep a message for the reader, or close the request."""
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._arrived.append(msg)
            self._due -= 1
            if self._due <= 0:
                self._open_until = 0.0
        elif status != "100":  # 408 expired, 404/409: the request is over (100: heartbeat)
            self._open_until = 0.0
        self._ready.set()

    def fetch(self, max_msgs: int, timeout_s: float) -> list[EngineMessage]:
        """Up to ``max_msgs`` messages in stream order; empty when none came within the time."""
        self._ready.clear()  # before looking: a message after the look sets it again
        if not self._arrived:
            if time.monotonic() >= self._open_until:
                self._request(max_msgs, timeout_s)
            self._ready.wait(timeout_s)
        out: list[Msg] = []
        arrived = self._arrived
        while arrived and len(out) < max_msgs:
            out.append(arrived.popleft())
        if out:
            self._last = out[-1]
        return [EngineMessage(m.subject, m.data, _stream_seq(m)) for m in out]

    def _request(self, max_msgs: int, timeout_s: float) -> None:
        body = json.dumps({"batch": max_msgs, "expires": int(timeout_s * 1e9)}).encode()
        self._due = max_msgs
        self._open_until = time.monotonic() + timeout_s
        self._link.call(self._nc.publish(self._api, body, reply=self.sub.subject), 10.0)

    def ack_fetched(self) -> None:
        """Acknowledge everything fetched so far (cumulative: the last message only)."""
        last = self._last
        if last is not None:
            self._link.call(last.ack_sync(timeout=5.0), 10.0)
            self._last = None

    def close(self) -> None:
        try:
            self._link.call(self.sub.unsubscribe(), 5.0)
        except EngineError as exc:
            log.debug("consumer %s: unsubscribe failed (%s)", self.name, exc)


class EngineLink:
    """A connection to the engine, its event loop in a thread of its own.

    Args:
        servers: ``nats://host:port`` of one or more cluster nodes (the client fails over).
        name: The connection's name in the engine's monitoring.
        connect_timeout_s: How long the first connection may take.
    """

    def __init__(self, servers: Sequence[str], *, name: str, connect_timeout_s: float = 5.0):
        self._servers = list(servers)
        self._name = name
        self._timeout = connect_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._nc: Client | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coro`` on the link's loop and wait for it (:class:`EngineError` on failure)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise EngineError(f"the engine did not answer within {timeout_s:.0f} s") from exc
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}") from exc

    def connect(self) -> EngineLink:
        self._thread.start()

        async def connect() -> Client:
            return await nats.connect(
                servers=self._servers,
                name=self._name,
                connect_timeout=self._timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
            )

        self._nc = self.call(connect(), self._timeout * (len(self._servers) + 1))
        return self

    def _js(self) -> Any:
        if self._nc is None:
            raise EngineError("not connected")
        return self._nc.jetstream(timeout=10.0)

    def ensure_stream(
        self, name: str, subjects: list[str], *, replicas: int, max_age_s: float
    ) -> None:
        """Create the stream, or update its subjects and limits (replicas cannot change)."""
        config = StreamConfig(
            name=name,
            subjects=subjects,
            num_replicas=replicas,
            storage=StorageType.FILE,
            max_age=max_age_s,
        )
        js = self._js()

        async def ensure() -> None:
            try:
                await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                await js.add_stream(config)
                return
            await js.update_stream(config)

        self.call(ensure(), 30.0)

    def take_partition(
        self,
        stream: str,
        durable: str,
        filter_subject: str,
        *,
        max_ack_pending: int,
        ack_wait_s: float,
    ) -> PartitionConsumer:
        """Become the reader of a partition: its consumer starts again right after the last
        message acknowledged, so what a previous owner fetched but did not commit comes now, in
        order, rather than after its acknowledgement deadline."""
        js = self._js()

        async def take() -> None:
            start: int | None = None
            try:
                info = await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None:
                start = info.ack_floor.stream_seq + 1
                await js.delete_consumer(stream, durable)
            config = ConsumerConfig(
                durable_name=durable,
                filter_subject=filter_subject,
                ack_policy=AckPolicy.ALL,
                ack_wait=ack_wait_s,
                max_ack_pending=max_ack_pending,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL,
                opt_start_seq=start,
            )
            await js.add_consumer(stream, config)
            consumer.sub = await nc.subscribe(
                nc.new_inbox(), cb=consumer.on_message, pending_msgs_limit=-1
            )

        assert self._nc is not None  # noqa: S101 - _js() checked
        nc = self._nc
        consumer = PartitionConsumer(
            self, nc, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", durable
        )
        self.call(take(), 30.0)
        return consumer

    def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(EngineError):  # closing what is gone already
                self.call(self._nc.close(), 10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive():
            self._thread.join(10.0)
        if not self._loop.is_running():
            self._loop.close()
