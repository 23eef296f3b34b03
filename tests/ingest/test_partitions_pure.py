"""The pure parts of the partitioned ingest: fair shares and topics back from subjects."""

from __future__ import annotations

from core.engine import partition_of
from ingest.partitioned import mqtt_topic
from ingest.partitions import plan


def test_each_member_gets_its_fair_share_of_the_free_partitions() -> None:
    assert plan(16, 1, set()) == (16, list(range(16)))
    assert plan(16, 2, set(range(8))) == (8, list(range(8, 16)))
    assert plan(16, 3, set(range(12))) == (6, [12, 13, 14, 15])
    assert plan(16, 0, set()) == (16, list(range(16)))  # before its own member lock shows


def test_a_subject_goes_back_to_the_topic_the_device_published_on() -> None:
    assert mqtt_topic("anxin.part.7.wb-0001.telemetry", "anxin.part", "anxin/v1") == (
        "anxin/v1/dev/wb-0001/telemetry"
    )
    # Anything else stays as it came, and the decoder dead-letters it as a bad topic.
    assert mqtt_topic("other.subject", "anxin.part", "anxin/v1") == "other.subject"
    assert mqtt_topic("anxin.part.7.a.b.c", "anxin.part", "anxin/v1") == "anxin.part.7.a.b.c"


def test_the_partition_of_a_device_is_fnv_1a_of_its_id() -> None:
    # What nats-server's {{partition(8,1)}} gave these ids (checked against a real server in
    # tests/ingest/test_partitioned.py for 16 partitions).
    assert [partition_of(d, 8) for d in ("wb1", "wb2", "wb3", "wb4")] == [7, 2, 5, 0]
