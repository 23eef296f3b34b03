"""Channels: one small interface, many sinks.

The delivery worker hands every outgoing message to the :class:`Channel` named by the
delivery's ``channel`` column and gets a :class:`SendResult` back; it never knows how a message
travels. Two sinks exist:

- :class:`AppriseChannel` for people: SMS gateways, email, WeChat Work (``wecombot://``),
  DingTalk (``dingtalk://``), Feishu (``feishu://``), webhooks (``json://``) - any apprise URL;
- :class:`Dispatch120Channel` for the 120 dispatch centre: a signed, idempotent HTTP POST.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import apprise
import httpx

from alerts.dispatch120 import sign_request

#: Apprise schemes of plain HTTP webhooks, which accept extra headers as ``+Name=value``.
_WEBHOOK_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message to one recipient.

    Attributes:
        delivery_id: Row id in ``deliveries``.
        idempotency_key: Sent along (``Idempotency-Key``) so a receiver drops duplicates.
        address: Apprise URL, or the 120 endpoint URL.
        title: Subject line (human channels).
        body: Text (human channels) or the serialized emergency record (120).
        content_type: MIME type of ``body`` where it matters (120).
    """

    delivery_id: int
    idempotency_key: str
    address: str
    title: str
    body: str
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one attempt gave.

    Attributes:
        ok: Delivered (2xx, or apprise reported success).
        retryable: On failure, whether trying again may help (5xx, 408, 429, timeouts).
        status_code: HTTP status where there was one.
        error: What went wrong, for ``delivery_attempts.error`` and ``last_error``.
        retry_after_s: The receiver's ``Retry-After``, when it sent one.
        duration_ms: Time the attempt took.
    """

    ok: bool
    retryable: bool = True
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    duration_ms: int = 0


class Channel(Protocol):
    """A way to reach a recipient. ``send`` never raises for a failed delivery: it says so."""

    async def send(self, message: OutboundMessage) -> SendResult: ...

    async def aclose(self) -> None: ...


def with_idempotency_header(url: str, key: str) -> str:
    """For apprise webhook URLs (``json://`` and kin) add ``+Idempotency-Key=<key>``.

    Apprise sends ``+Name=value`` query arguments of these schemes as HTTP headers; other
    schemes (SMS, email, chat bots) have no place for the key and are returned unchanged.
    """
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _WEBHOOK_SCHEMES:
        return url
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{quote('+Idempotency-Key')}={quote(key, safe='')}"


class AppriseChannel:
    """Human channels through apprise.

    Apprise's ``notify`` is blocking (it does its own HTTP and SMTP). It runs on a bounded
    thread pool so that a slow SMTP server or chat API never stalls the event loop that claims
    and sends every other delivery, and so that a burst of alerts cannot start unbounded threads.
    """

    def __init__(self, *, max_workers: int = 8, asset: apprise.AppriseAsset | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="apprise")
        self._asset = asset

    def _notify(self, message: OutboundMessage) -> tuple[bool, str | None]:
        notifier = apprise.Apprise(asset=self._asset) if self._asset else apprise.Apprise()
        url = with_idempotency_header(message.address, message.idempotency_key)
        if not notifier.add(url):
            scheme = message.address.split("://", 1)[0]
            return False, f"apprise does not accept the URL (scheme {scheme!r})"
        ok = bool(notifier.notify(title=message.title, body=message.body))
        return ok, None if ok else "apprise reported a failed notification"

    async def send(self, message: OutboundMessage) -> SendResult:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            ok, error = await loop.run_in_executor(self._executor, self._notify, message)
        except Exception as exc:  # a plugin bug is one failed attempt, not a dead worker
            ok, error = False, f"{type(exc).__name__}: {exc}"
        duration = int((time.monotonic() - started) * 1000)
        bad_url = error is not None and error.startswith("apprise does not accept")
        return SendResult(ok=ok, retryable=not bad_url, error=error, duration_ms=duration)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the worker's own back-off applies


class Dispatch120Channel:
    """The 120 hand-off: POST of the emergency record, signed with HMAC-SHA256.

    Headers: ``Content-Type`` (JSON or CAP XML), ``X-Anxin-Timestamp`` (Unix seconds),
    ``X-Anxin-Signature`` (``sha256=`` + hex HMAC over the timestamp, the idempotency key, the
    content type and the body: :func:`alerts.dispatch120.signed_message`) and
    ``Idempotency-Key``. 2xx is delivered; 5xx, 408, 429 and network errors are retried;
    any other status is final (the receiver refused the record: retrying cannot help).
    """

    def __init__(
        self,
        secret: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: _UnixClock | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._secret = secret.encode()
        # TCP_NODELAY: httpx writes the headers and the body of a request separately, and with
        # Nagle's algorithm the body waits for the receiver's delayed ACK (40 ms on Linux).
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            transport=transport
            or httpx.AsyncHTTPTransport(
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
            ),
        )
        self._clock = clock or time.time
        self._extra = dict(extra_headers or {})

    async def send(self, message: OutboundMessage) -> SendResult:
        body = message.body.encode()
        timestamp = str(int(self._clock()))
        headers = {
            **self._extra,
            "Content-Type": message.content_type,
            "X-Anxin-Timestamp": timestamp,
            "X-Anxin-Signature": sign_request(
                self._secret,
                timestamp=timestamp,
                idempotency_key=message.idempotency_key,
                content_type=message.content_type,
                body=body,
            ),
            "Idempotency-Key": message.idempotency_key,
        }
        started = time.monotonic()
        try:
            response = await self._client.post(message.address, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return SendResult(
                ok=False, error=f"timeout: {type(exc).__name__}", duration_ms=_ms(started)
            )
        except httpx.HTTPError as exc:
            return SendResult(
                ok=False, error=f"{type(exc).__name__}: {exc}", duration_ms=_ms(started)
            )
        status = response.status_code
        duration = _ms(started)
        if 200 <= status < 300:
            return SendResult(ok=True, status_code=status, duration_ms=duration)
        retryable = status >= 500 or status in {408, 429}
        reason = response.text[:200].strip()
        return SendResult(
            ok=False,
            retryable=retryable,
            status_code=status,
            error=f"HTTP {status}" + (f": {reason}" if reason else ""),
            retry_after_s=_retry_after(response.headers),
            duration_ms=duration,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class _UnixClock(Protocol):
    def __call__(self) -> float: ...


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
