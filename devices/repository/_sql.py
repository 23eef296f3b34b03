"""Shared helpers of the repository modules: the connection and row types, page arguments,
one-row and all-rows queries, encryption contexts, phone normalisation, and the generic update and
retire of a row by id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from devices.model import NotFoundError
from devices.phones import normalise_phone

Conn = psycopg.Connection[Any]
Row = dict[str, Any]
MAX_PAGE = 500


def _norm(phone: str | None) -> str | None:
    return None if phone is None else normalise_phone(phone).national


def _page_args(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit {limit} is out of range. Expected 1 to {MAX_PAGE}.")
    if offset < 0:
        raise ValueError(f"offset {offset} is negative.")


def _one(conn: Conn, query: str | sql.SQL | sql.Composed, params: Sequence[Any], what: str) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, params).fetchone()
    if row is None:
        raise NotFoundError(f"{what} does not exist.")
    return row


def _all(conn: Conn, query: str | sql.SQL | sql.Composed, params: Sequence[Any] = ()) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _ctx(table: str, column: str, key: object) -> str:
    return f"{table}.{column}:{key}"


def _update(conn: Conn, table: str, key: object, sets: Sequence[tuple[str, Any]]) -> None:
    query = sql.SQL("UPDATE {} SET {}, updated_at = now() WHERE id = %s").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c, _ in sets),
    )
    conn.execute(query, [v for _, v in sets] + [key])


def _retire(conn: Conn, table: str, key: object, what: str) -> None:
    cur = conn.execute(
        sql.SQL("UPDATE {} SET status = 'retired', updated_at = now() WHERE id = %s").format(
            sql.Identifier(table)
        ),
        (key,),
    )
    if cur.rowcount == 0:
        raise NotFoundError(f"{what} {key} does not exist.")
