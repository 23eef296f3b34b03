"""NATS JetStream, the clustered engine of the partitioned ingest: the only importer of nats-py.

Devices keep speaking MQTT to the engine's MQTT listener. The engine maps each device topic to
a partition by the device id (``anxin.v1.dev.<id>.<channel>`` becomes
``anxin.part.<p>.<id>.<channel>`` by its subject mapping ``{{partition(P,1)}}``, the FNV-1a hash
of the id modulo P, :func:`partition_of`), stores every QoS 1 message, replicated over the
cluster, in its MQTT stream before it acknowledges it to the device (:data:`MQTT_STREAM`), and
one durable pull consumer per partition hands them to whichever ingester owns that partition.
Acknowledgement is cumulative (``AckPolicy.ALL``): acknowledging the last message of a committed
batch acknowledges the batch; every delivery is checked to follow the one before, so nothing
lost on the way is acknowledged with it (:class:`DeliveryGap`).

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
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from core.errors import AnxinError

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = [
    "MQTT_STREAM",
    "MQTT_SUBJECTS",
    "DeliveryGap",
    "EngineError",
    "EngineLink",
    "EngineMessage",
    "EngineMisconfigured",
    "PartitionConsumer",
    "partition_of",
    "partition_subject",
]


MQTT_STREAM = "$MQTT_msgs"
"""The engine's own stream of the QoS 1 messages its MQTT clients publish (nats-server's
``README-MQTT.md``). The engine answers a device's PUBLISH with PUBACK only once the message is
stored there, replicated, so the partitions are read from it: what a device was told is
received is in the stream, whichever node dies. (A stream of our own over the mapped subjects
would miss what is published while its leader is being elected, after the PUBACK.)"""
MQTT_SUBJECTS = "$MQTT.msgs."
"""What the engine puts before a message's (mapped) subject in :data:`MQTT_STREAM`."""


class EngineError(AnxinError):
    """The engine did not answer, or refused a request."""


class EngineMisconfigured(EngineError):
    """The engine is set up in a way the partitioned ingest cannot be correct with; trying
    again does not help."""


class DeliveryGap(EngineError):
    """A partition's consumer delivered something this reader never received (lost in flight
    while the consumer's leader moved to another node), or sent an earlier message again.

    With cumulative acknowledgement, acknowledging what came after would acknowledge what was
    lost: the reader must not, and reads the partition again from its acknowledgement floor
    (:meth:`EngineLink.take_partition`)."""


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


def _sequences(msg: Msg) -> tuple[int, int, int]:
    """The message's sequence in the stream and in its consumer's deliveries, and how many
    messages the consumer holds after it, from its acknowledgement subject (``$JS.ACK.<stream>.
    <consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``; nats-py's
    ``metadata`` parses the whole of it into objects, per message)."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6]), int(tokens[8])
    meta = msg.metadata
    return int(meta.sequence.stream), int(meta.sequence.consumer), int(meta.num_pending)


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

    def __init__(self, link: EngineLink, nc: Client, name: str) -> None:
        self._link = link
        self._nc = nc
        self.name = name
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{MQTT_STREAM}.{name}"
        self.sub: Any = None
        self._arrived: deque[Msg] = deque()
        self._ready = threading.Event()
        self._open_until = 0.0  # monotonic time the open request expires; 0: none open
        self._due = 0  # messages the open request may still bring
        self._last: Msg | None = None
        self._next_delivery = 1  # the consumer is new: its deliveries count from 1
        self._last_stream = 0
        self.pending = 0
        """Messages the consumer holds after the last one fetched (0 after an empty fetch)."""

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
        """Up to ``max_msgs`` messages in stream order; empty when none came within the time.

        Every delivery is checked to follow the one before it (the consumer numbers them):
        :class:`DeliveryGap` when one is missing; a message sent again (its acknowledgement
        came after the deadline) is passed over, as this reader has it already."""
        self._ready.clear()  # before looking: a message after the look sets it again
        if not self._arrived:
            if time.monotonic() >= self._open_until:
                self._request(max_msgs, timeout_s)
            self._ready.wait(timeout_s)
        out: list[Msg] = []
        arrived = self._arrived
        while arrived and len(out) < max_msgs:
            out.append(arrived.popleft())
        cut = len(MQTT_SUBJECTS)
        messages = []
        if not out:
            self.pending = 0
        for m in out:
            stream_seq, delivery, self.pending = _sequences(m)
            if delivery != self._next_delivery:
                raise DeliveryGap(
                    f"consumer {self.name}: delivery {delivery} (stream sequence {stream_seq}) "
                    f"came where {self._next_delivery} was due"
                )
            self._next_delivery = delivery + 1
            if stream_seq <= self._last_stream:
                continue  # sent again (its acknowledgement was late): this reader has it
            self._last_stream = stream_seq
            messages.append(EngineMessage(m.subject[cut:], m.data, stream_seq))
        if out:
            self._last = out[-1]
        return messages

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

    def ensure_mqtt_stream(self, replicas: int, *, max_age_s: float, max_bytes: int) -> None:
        """Make sure the engine's MQTT message stream (:data:`MQTT_STREAM`) keeps what devices
        send for ``max_age_s``, read or not (limits retention), and at most ``max_bytes`` on a
        node: past that the oldest messages go, so devices are never refused for a full disk.

        The engine makes the stream itself when the first MQTT client connects, with interest
        retention: a message goes once every consumer that wants it has acknowledged it, and
        one stored while no consumer of its subject is known is dropped at once. The engine
        (nats-server 2.9) lost messages that way here while a node was replaced, so the stream
        is made here first, and the engine, finding it, uses it as it is.

        Raises:
            EngineMisconfigured: The engine made it first; it must be made again before devices
                connect (docs/operations.md says how).
            EngineError: The engine did not answer."""
        js = self._js()
        config = StreamConfig(
            name=MQTT_STREAM,
            subjects=[MQTT_SUBJECTS + ">"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=max_age_s,
            max_bytes=max_bytes,
            discard=DiscardPolicy.OLD,
        )

        async def ensure() -> None:
            try:
                info = await js.stream_info(MQTT_STREAM)
            except nats.js.errors.NotFoundError:
                await js.add_stream(config)
                return
            if info.config.retention != RetentionPolicy.LIMITS:
                raise EngineMisconfigured(
                    f"the engine made its MQTT stream {MQTT_STREAM} itself (retention "
                    f"{info.config.retention}), which drops messages while a node is replaced: "
                    "start an ingester before the first device connects (docs/operations.md, "
                    "'Past one machine')"
                )
            if (info.config.max_age, info.config.max_bytes) != (max_age_s, max_bytes):
                info.config.max_age, info.config.max_bytes = max_age_s, max_bytes
                await js.update_stream(info.config)

        self.call(ensure(), 30.0)

    async def _consumers(self, js: Any, durable: str) -> list[Any]:
        """The partition's consumers that exist now (of its two names, ``-a`` and ``-b``)."""
        found = []
        for name in (f"{durable}-a", f"{durable}-b"):
            try:
                found.append(await js.consumer_info(MQTT_STREAM, name))
            except nats.js.errors.NotFoundError:
                continue
        return found

    @staticmethod
    def _config(
        name: str,
        partition_filter: str,
        start: int | None,
        *,
        max_ack_pending: int,
        ack_wait_s: float,
    ) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=name,
            filter_subject=MQTT_SUBJECTS + partition_filter,
            ack_policy=AckPolicy.ALL,
            ack_wait=ack_wait_s,
            max_ack_pending=max_ack_pending,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL,
            opt_start_seq=start,
        )

    def ensure_partitions(
        self, durables: Sequence[tuple[str, str]], *, max_ack_pending: int, ack_wait_s: float
    ) -> None:
        """Give every partition (``(durable, filter)``) a consumer, owned or not, from the
        first message the stream holds: whoever reads a partition first starts there."""
        js = self._js()

        async def ensure() -> None:
            for durable, partition_filter in durables:
                if not await self._consumers(js, durable):
                    await js.add_consumer(
                        MQTT_STREAM,
                        self._config(
                            f"{durable}-a",
                            partition_filter,
                            None,
                            max_ack_pending=max_ack_pending,
                            ack_wait_s=ack_wait_s,
                        ),
                    )

        self.call(ensure(), 60.0)

    def take_partition(
        self,
        durable: str,
        partition_filter: str,
        *,
        max_ack_pending: int,
        ack_wait_s: float,
    ) -> PartitionConsumer:
        """Become the reader of a partition: it is read again from right after the last message
        acknowledged, so what a previous owner fetched but did not commit comes now, in order,
        rather than after its acknowledgement deadline.

        A partition's consumer is replaced, never deleted first: the new one (of the two names)
        is made to start after the old one's acknowledgement floor, then the old one goes. At
        no moment does the partition lack its position, whenever the process dies."""
        js = self._js()

        async def take() -> str:
            existing = sorted(
                await self._consumers(js, durable), key=lambda i: i.ack_floor.stream_seq
            )
            for extra in existing[1:]:  # a take-over that died between its two steps
                await js.delete_consumer(MQTT_STREAM, extra.name)
            old = existing[0] if existing else None
            name = f"{durable}-b" if old is not None and old.name.endswith("-a") else f"{durable}-a"
            start = old.ack_floor.stream_seq + 1 if old is not None else None
            await js.add_consumer(
                MQTT_STREAM,
                self._config(
                    name,
                    partition_filter,
                    start,
                    max_ack_pending=max_ack_pending,
                    ack_wait_s=ack_wait_s,
                ),
            )
            if old is not None:
                await js.delete_consumer(MQTT_STREAM, old.name)
            return name

        assert self._nc is not None  # noqa: S101 - _js() checked
        nc = self._nc
        consumer = PartitionConsumer(self, nc, self.call(take(), 30.0))

        async def subscribe() -> None:
            consumer.sub = await nc.subscribe(
                nc.new_inbox(), cb=consumer.on_message, pending_msgs_limit=-1
            )

        self.call(subscribe(), 10.0)
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
