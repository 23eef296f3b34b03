"""Which ingester reads which partition of the engine: PostgreSQL advisory locks.

Each ingester holds, on a connection of its own, one session advisory lock as a member
(``(namespace + 1, its backend pid)``) and one per partition it owns (``(namespace, p)``).
Every ``rebalance_every_s`` it reads ``pg_locks``: with M members and P partitions each should
own ``ceil(P / M)``; one that owns fewer takes free partitions (``pg_try_advisory_lock``), one
that owns more lets the surplus go. A lock dies with its session, so when an ingester dies
(or loses its database connection) its partitions are free at once for the others to take, and
two ingesters never hold the same partition. No protocol of our own: the database arbitrates.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import psycopg

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one rebalance decided: partitions to take and to let go, and the members seen."""

    take: tuple[int, ...]
    release: tuple[int, ...]
    members: int


def plan(partitions: int, members: int, held: set[int]) -> tuple[int, list[int]]:
    """Pure: the fair share of one member and the partitions it may try to take (free ones,
    in order), given every partition held by anyone (``held``)."""
    share = math.ceil(partitions / max(1, members))
    free = [p for p in range(partitions) if p not in held]
    return share, free


class PartitionOwnership:
    """The partitions this ingester owns, as advisory locks on its own connection.

    Args:
        url: The database (the same one the ingesters write to).
        partitions: How many partitions the stream has.
        namespace: First key of the partition locks (members use ``namespace + 1``).
    """

    def __init__(self, url: str, partitions: int, namespace: int) -> None:
        self._url = url
        self.partitions = partitions
        self._ns = namespace
        self._conn: psycopg.Connection[Any] | None = None
        self.owned: set[int] = set()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # A new session holds no lock: whatever the old one held is gone with it.
            self.owned = set()
            self._conn = psycopg.connect(self._url, autocommit=True)
            self._conn.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", (self._ns + 1,))
        return self._conn

    def rebalance(self) -> Plan:
        """Take or release partitions towards the fair share; returns what changed.

        Raises:
            psycopg.OperationalError: the database is away; every lock is lost with the session
                (:attr:`owned` is empty after the next successful call).
        """
        conn = self._connection()
        rows = conn.execute(
            """SELECT classid::bigint, objid::bigint, pid = pg_backend_pid() FROM pg_locks
                WHERE locktype = 'advisory' AND granted AND objsubid = 2
                  AND classid::bigint IN (%s, %s)""",
            (self._ns, self._ns + 1),
        ).fetchall()
        members = sum(1 for ns, _o, _m in rows if ns == self._ns + 1)
        held = {int(o) for ns, o, _m in rows if ns == self._ns}
        mine = {int(o) for ns, o, m in rows if ns == self._ns and m}
        self.owned = mine
        share, free = plan(self.partitions, members, held)
        take: list[int] = []
        release: list[int] = []
        if len(mine) < share:
            for p in free:
                if len(mine) + len(take) >= share:
                    break
                (ok,) = conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (self._ns, p)
                ).fetchone()  # type: ignore[misc]
                if ok:
                    take.append(p)
        elif len(mine) > share:
            release = sorted(mine)[share:]
        return Plan(tuple(take), tuple(release), members)

    def let_go(self, partition: int) -> None:
        """Release a partition (after its reader stopped and committed what it had)."""
        conn = self._connection()
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self._ns, partition))
        self.owned.discard(partition)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.owned = set()
