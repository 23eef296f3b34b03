"""Fuzz the device decoder against the real database: nothing it accepts may be refused there.

Valid telemetry, event and status payloads are mutated (any field replaced by text with NUL
characters, control characters and astral planes, huge and tiny numbers, NaN and infinities,
nested structures, long strings; keys added and repeated; ASCII-escaped or raw UTF-8):

* by a seeded mutation fuzzer, ``ANXIN_FUZZ_EXAMPLES`` inputs (100,000 by default; a few
  seconds), and
* by Hypothesis, ``ANXIN_FUZZ_HYPOTHESIS`` inputs (2,000 by default; Hypothesis costs about
  10 ms an input here, so it explores shapes while the seeded fuzzer brings the count).

Every payload the decoder accepts goes through the ingest pipeline and
:class:`ingest.store.PostgresStore` into PostgreSQL, in batches; a batch the database refuses
is bisected to the payload, which fails the test. A refusal by the decoder is fine.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from devices.protocol import Channel, Limits, ProtocolError, decode
from devices.registry import ensure_devices
from ingest.pipeline import DeviceInfo, DeviceState, RawMessage, process_batch
from ingest.store import PostgresStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = int(os.environ.get("ANXIN_FUZZ_EXAMPLES", "100000"))
HYPOTHESIS_EXAMPLES = int(os.environ.get("ANXIN_FUZZ_HYPOTHESIS", "2000"))
PREFIX = "anxin/v1"
DEVICE = "fuzz-wb-01"

NASTY_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Z", "Cc", "Cf"]),
    max_size=40,
) | st.sampled_from(["\x00", "a\x00b", "\u2028", "\U0001f600" * 10, "x" * 5000, "", " "])
NASTY_NUMBER = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**63, 2**63 - 1, -(2**63), 1e400])
)
LEAF = st.none() | st.booleans() | NASTY_NUMBER | NASTY_TEXT
NASTY = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(NASTY_TEXT, children, max_size=3)
    ),
    max_leaves=6,
)


def _templates(now_ms: int) -> dict[Channel, dict[str, Any]]:
    return {
        Channel.TELEMETRY: {
            "v": 1,
            "ts": now_ms - 5000,
            "seq": 1,
            "vitals": {
                "hr": 72,
                "spo2": 97,
                "rr": 15,
                "temp": 36.6,
                "sbp": 120,
                "dbp": 80,
                "o2": False,
                "acvpu": "A",
            },
            "accel": {"hz": 25, "enc": "json", "data": [0.0, 0.0, 1.0] * 25},
            "bed": {"presence": True, "hr": 60, "rr": 14, "move": 0.2},
            "battery": {"pct": 50, "charging": False},
            "pos": {"lat": 31.2, "lon": 121.4, "acc": 5, "indoor": "kitchen"},
        },
        Channel.EVENT: {
            "v": 1,
            "ts": now_ms - 5000,
            "seq": 2,
            "type": "sos",
            "detail": {"source": "hotkey", "note": "x"},
        },
        Channel.STATUS: {
            "v": 1,
            "ts": now_ms - 5000,
            "online": True,
            "fw": "2.1.0",
            "battery": 40,
            "reason": "boot",
        },
    }


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list) and doc:
        out += _paths(doc[0], (*prefix, 0))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


_TEXTS = ["\x00", "a\x00b", "\u2028", "\U0001f600" * 10, "x" * 5000, "", " ", "\x1f", "\u202e",
          "\ufeff", "é", "\\u0000", '"', "\\", "null", "1e400", "卧室"]  # fmt: skip
_NUMBERS = [0, -0.0, 1e308, -1e308, 5e-324, 2**63, 2**63 - 1, -(2**63), -1, 1, 0.5, 2**70,
            -(2**70), 1e400, float("nan"), float("inf"), -float("inf"), 3.4e38, 3.5e38, 1e-46]  # fmt: skip


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(10)
    if pick < 3:
        return rng.choice(_TEXTS) if rng.random() < 0.6 else "".join(
            chr(rng.choice([rng.randrange(0x20), rng.randrange(0x20, 0xD800), rng.randrange(0xE000, 0x110000)]))
            for _ in range(rng.randrange(1, 12))
        )  # fmt: skip
    if pick < 6:
        return rng.choice(_NUMBERS) if rng.random() < 0.6 else rng.uniform(-1e6, 1e6)
    if pick < 7:
        return rng.choice([None, True, False])
    if depth > 2:
        return None
    if pick < 8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(_TEXTS[:8]) + str(k): _random_value(rng, depth + 1)
        for k in range(rng.randrange(3))
    }


def _mutated(rng: random.Random, now_ms: int) -> tuple[Channel, bytes]:
    channel = rng.choice([Channel.TELEMETRY, Channel.EVENT, Channel.STATUS])
    doc = json.loads(json.dumps(_templates(now_ms)[channel]))
    for _ in range(rng.randrange(1, 4)):
        _set(doc, rng.choice(_paths(doc)), _random_value(rng))
    if rng.random() < 0.2:
        doc[rng.choice(_TEXTS)] = _random_value(rng)
    text = json.dumps(doc, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.1:
        text = text.replace('{"v": 1,', '{"v": 1, "v": 1,', 1)
    return channel, text.encode("utf-8", "surrogatepass")


@st.composite
def payloads(draw: st.DrawFn, now_ms: int) -> tuple[Channel, bytes]:
    channel = draw(st.sampled_from([Channel.TELEMETRY, Channel.EVENT, Channel.STATUS]))
    doc = json.loads(json.dumps(_templates(now_ms)[channel]))
    for _ in range(draw(st.integers(1, 3))):
        _set(doc, draw(st.sampled_from(_paths(doc))), draw(NASTY))
    if draw(st.booleans()):
        key = draw(NASTY_TEXT)
        doc[key] = draw(NASTY)
    text = json.dumps(doc, allow_nan=True, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 9)) == 0:  # repeat a key: the decoder must not pick one silently
        text = text.replace('{"v": 1,', '{"v": 1, "v": 1,', 1)
    return channel, text.encode("utf-8", "surrogatepass")


def test_nothing_the_decoder_accepts_is_refused_by_the_database(db_url: str) -> None:
    now_ms = int(time.time() * 1000)
    limits = Limits(now_ms=now_ms + 10_000)
    accepted: list[RawMessage] = []
    counts = {"inputs": 0, "accepted": 0}

    def try_one(channel: Channel, payload: bytes) -> None:
        counts["inputs"] += 1
        try:
            decode(channel, DEVICE, payload, limits)
        except ProtocolError:
            return
        counts["accepted"] += 1
        # A sequence number of its own per message, so the unique index keeps each one.
        topic = f"{PREFIX}/dev/{DEVICE}/{channel.value}"
        accepted.append(RawMessage(topic, _renumber(payload, len(accepted)), now_ms))

    rng = random.Random(20261201)
    for _ in range(EXAMPLES):
        try_one(*_mutated(rng, now_ms))

    @settings(
        max_examples=HYPOTHESIS_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(payloads(now_ms))
    def fuzz(case: tuple[Channel, bytes]) -> None:
        try_one(*case)

    fuzz()
    assert counts["inputs"] >= EXAMPLES + HYPOTHESIS_EXAMPLES, counts
    assert counts["accepted"] > counts["inputs"] // 100, f"mutations refused too often: {counts}"

    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, [DEVICE])
    devices = {DEVICE: DeviceInfo(DEVICE, "wristband", DeviceState.ACTIVE, 0)}
    store = PostgresStore(db_url)
    try:
        for start in range(0, len(accepted), 2000):
            _write_or_find(store, accepted[start : start + 2000], devices, limits)
    finally:
        store.close()


def _renumber(payload: bytes, seq: int) -> bytes:
    return payload.replace(b'"seq": 1,', b'"seq": %d,' % (seq + 10), 1).replace(
        b'"seq": 2,', b'"seq": %d,' % (seq + 10), 1
    )


def _write_or_find(
    store: PostgresStore, msgs: list[RawMessage], devices: dict[str, DeviceInfo], limits: Limits
) -> None:
    batch = process_batch(msgs, devices, limits, PREFIX)
    try:
        store.write(batch)
    except (psycopg.Error, ValueError, OverflowError, TypeError) as exc:
        if len(msgs) == 1:
            pytest.fail(
                f"the decoder accepted {msgs[0].topic} {msgs[0].payload[:300]!r} "
                f"and the database refused it: {exc}"
            )
        mid = len(msgs) // 2
        _write_or_find(store, msgs[:mid], devices, limits)
        _write_or_find(store, msgs[mid:], devices, limits)
