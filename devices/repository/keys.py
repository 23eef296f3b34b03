"""Key rotation: re-encrypt every sealed value under the keyring's current key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import sql

from devices.crypto import Keyring
from devices.repository._sql import Conn, _all

#: Every encrypted column: (table, key column, encrypted column, context column name).
ENCRYPTED_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("residents", "id", "id_number_enc", "id_number"),
    ("residents", "id", "health_card_enc", "health_card"),
    ("contacts", "id", "channel_url_enc", "channel_url"),
    ("doctor_team_members", "id", "channel_url_enc", "channel_url"),
)


def rotate_keys(conn: Conn, *, keyring: Keyring, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every sealed value not under the keyring's current key.

    Run after making a new key current; when it returns, the old key can leave the keyring.
    Idempotent and safe to re-run after an interruption (each batch commits on its own when
    ``conn`` is not in a transaction). Profile versions are re-encrypted in place: their content
    does not change.

    Returns:
        Values re-encrypted per ``table.column``.
    """
    done: dict[str, int] = {}
    targets: list[tuple[str, Iterable[str], str, str]] = [
        (t, [k], c, f"{t}.{name}:{{{k}}}") for t, k, c, name in ENCRYPTED_COLUMNS
    ]
    targets.append(
        (
            "emergency_profiles",
            ["resident_id", "version"],
            "body_enc",
            "emergency_profiles.body:{resident_id}",
        )
    )
    for table, keys, column, ctx_format in targets:
        key_cols = list(keys)
        count = 0
        last: tuple[Any, ...] | None = None
        while True:
            with conn.transaction():
                order = sql.SQL(", ").join(map(sql.Identifier, key_cols))
                after = (
                    sql.SQL("true")
                    if last is None
                    else sql.SQL("({}) > ({})").format(
                        order, sql.SQL(", ").join(sql.Placeholder() * len(key_cols))
                    )
                )
                rows = _all(
                    conn,
                    sql.SQL(
                        "SELECT {}, {} AS sealed FROM {} WHERE {} IS NOT NULL AND {} ORDER BY {} LIMIT %s FOR UPDATE"
                    ).format(
                        order,
                        sql.Identifier(column),
                        sql.Identifier(table),
                        sql.Identifier(column),
                        after,
                        order,
                    ),
                    [*(last or ()), batch_size],
                )
                for row in rows:
                    sealed = bytes(row["sealed"])
                    if not keyring.needs_rotation(sealed):
                        continue
                    ctx = ctx_format.format(**{k: row[k] for k in key_cols})
                    fresh = keyring.seal(keyring.open(sealed, ctx), ctx)
                    cond = sql.SQL(" AND ").join(
                        sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key_cols
                    )
                    conn.execute(
                        sql.SQL("UPDATE {} SET {} = %s WHERE {}").format(
                            sql.Identifier(table), sql.Identifier(column), cond
                        ),
                        [fresh, *(row[k] for k in key_cols)],
                    )
                    count += 1
            if len(rows) < batch_size:
                break
            last = tuple(rows[-1][k] for k in key_cols)
        done[f"{table}.{column}"] = count
    return done
