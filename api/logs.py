"""What the API's access log may hold: no acknowledge tokens, no phone numbers, no names.

uvicorn logs each request's path and query on the ``uvicorn.access`` logger. An acknowledge
link's token is a credential, and a caller lookup's query is a phone number: a filter on that
logger rewrites the path before any handler sees it (:func:`redact_path`).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, quote

ACCESS_LOGGER = "uvicorn.access"
# Query parameters whose values are harmless to log (paging, filters by id or state).
SAFE_PARAMS = frozenset(
    {
        "limit", "offset", "state", "kind", "status", "flag", "months", "since",
        "include_profiles", "team_id", "community_id", "resident_id", "reason",
        "payload_limit", "granted", "gateway_id", "verified",
    }
)  # fmt: skip
_SECRET_SEGMENT_AFTER = ("ack",)
MASK = "…"


def redact_path(full_path: str) -> str:
    """``full_path`` (path and query, as uvicorn logs it) with secrets masked: the token of
    ``/ack/<token>`` cut to its first 4 characters, and every query value not in
    :data:`SAFE_PARAMS` replaced by ``…``."""
    path, sep, query = full_path.partition("?")
    parts = path.split("/")
    for i in range(1, len(parts)):
        if parts[i - 1] in _SECRET_SEGMENT_AFTER and parts[i]:
            parts[i] = parts[i][:4] + MASK
    out = "/".join(parts)
    if not sep:
        return out
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [
        f"{quote(k, safe='')}={quote(v, safe='') if k in SAFE_PARAMS else MASK}" for k, v in pairs
    ]
    return out + "?" + "&".join(shown)


class RedactAccessLog(logging.Filter):
    """Masks the path argument of uvicorn's access log records (see :func:`redact_path`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def redact_access_log() -> None:
    """Install :class:`RedactAccessLog` on uvicorn's access logger (once)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactAccessLog) for f in logger.filters):
        logger.addFilter(RedactAccessLog())
