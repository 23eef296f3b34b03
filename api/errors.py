"""Bad input is a 4xx with a message, never a 500: the handlers that make sure of it.

* FastAPI's 422 lists each error with the ``input`` it refused. That input may be NaN or an
  infinity (``1e400`` parses as one), a lone surrogate, or megabytes of text, none of which
  JSON can carry: :func:`safe_errors` renders such values as short text.
* A value the database cannot store (a NUL character, a number out of a column's range)
  raises ``psycopg.DataError``; text with a lone surrogate cannot be encoded as UTF-8. Both
  are the client's input: 422, naming what was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

_MAX_TEXT = 200
_MAX_ITEMS = 20


def _safe(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, bounded rendering of a refused input value."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"
    if depth >= 3:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())[:_MAX_ITEMS]
        return {str(_safe(k, depth + 1)): _safe(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
    return _safe(str(value), depth + 1)


def safe_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's error list with every value JSON can carry, bounded in size."""
    out: list[dict[str, Any]] = []
    for err in list(errors)[:_MAX_ITEMS]:
        item = {
            "type": str(err.get("type", "")),
            "loc": [_safe(p) for p in err.get("loc", ())],
            "msg": _safe(str(err.get("msg", ""))),
        }
        if "input" in err:
            item["input"] = _safe(err["input"])
        if err.get("ctx"):
            item["ctx"] = {str(k): _safe(str(v)) for k, v in err["ctx"].items()}
        out.append(item)
    return out


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type
    return JSONResponse({"detail": safe_errors(exc.errors())}, status_code=422)


async def _data_error(_request: Request, exc: Exception) -> JSONResponse:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "NUL" in message:
        message = "a text value holds a NUL character (\\u0000), which cannot be stored"
    return JSONResponse({"detail": f"A value cannot be stored: {_safe(message)}."}, status_code=422)


async def _unencodable(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnicodeError)  # noqa: S101 - registered for this type
    return JSONResponse(
        {"detail": "A text value is not valid Unicode (a lone surrogate such as \\ud800)."},
        status_code=422,
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(psycopg.DataError, _data_error)
    app.add_exception_handler(UnicodeEncodeError, _unencodable)
