"""The demo's stand-in for the outside world: a 120 dispatch centre and the family's phones.

``anxin demo`` points ``ANXIN_ALERTS__DISPATCH120_URL`` and the care circle's apprise channels
(``json://`` webhooks) at one small HTTP server on ``127.0.0.1``, so a newcomer sees alerts
arrive where they would arrive in real life, without any account anywhere:

- ``POST /120/emergency``: the 120 push. The signature is checked the way a dispatch centre
  must check it (:func:`alerts.dispatch120.verify_push` on the raw body, with the secret
  the demo shares with the delivery worker); a bad one is refused with 401. A repeated
  ``Idempotency-Key`` is answered 200 and dropped, as docs/alerts.md asks of receivers.
- ``POST /phone/<who>``: an apprise ``json://`` message (``{"title", "message", "type"}``) to
  one person or office: ``/phone/child``, ``/phone/doctor``, ``/phone/sms-<number>`` (the SMS
  gateway's stand-in), ``/phone/operator``. Deduplicated by ``Idempotency-Key`` too.

What arrived is kept in memory (bounded) for the demo's status lines and for the tests,
which use this receiver as their 120 centre and phones too: every request is kept as an
:class:`Arrival` (headers, raw body, whether the signature held, the answer, whether it was a
repeat), and a receiver may be told to answer like a troubled centre (a ``script`` of status
codes for the first requests, a pause while handling chosen ones) to show retries and
take-overs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from alerts.dispatch120 import verify_push

log = logging.getLogger(__name__)

PUSH_PATH: Final = "/120/emergency"
PHONE_PREFIX: Final = "/phone/"
#: Largest body accepted (a 120 record with a full profile is a few kilobytes).
MAX_BODY: Final = 1 << 20
#: Records and messages kept for display; later ones are only counted.
KEEP: Final = 200


@dataclass(frozen=True, slots=True)
class Push120:
    """One accepted 120 push (signature checked), reduced to what the demo shows."""

    idempotency_key: str
    alert_id: int | None
    kind: str | None
    elder_name: str | None
    address: str | None
    conditions: tuple[str, ...]
    allergies: tuple[str, ...]
    blood_type: str | None
    has_profile: bool


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request as it arrived, with the answer it got."""

    key: str | None
    """Its ``Idempotency-Key``."""
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    signature_ok: bool
    """The 120 signature held (always False for a phone message, which carries none)."""
    status: int
    duplicate: bool
    """A repeat of a key already accepted (answered 2xx and dropped)."""
    at: float
    """``time.monotonic()`` on arrival."""


@dataclass(frozen=True, slots=True)
class PhoneMessage:
    """One accepted apprise ``json://`` message."""

    idempotency_key: str | None
    recipient: str
    title: str
    body: str


@dataclass(frozen=True, slots=True)
class ReceiverTotals:
    """Counts since the receiver started."""

    pushes: int = 0
    """Distinct 120 pushes accepted (signature ok)."""
    bad_signatures: int = 0
    duplicates: int = 0
    """Repeats of an idempotency key already accepted (120 and phones)."""
    messages: Counter[str] = field(default_factory=Counter)
    """Distinct phone messages by recipient path (``child``, ``doctor``, ...)."""


def _address_line(address: Any) -> str | None:
    if not isinstance(address, dict):
        return None
    parts = [address.get(k) for k in ("province", "city", "district", "street", "community")]
    line = "".join(str(p) for p in parts if p)
    text = address.get("text")
    return (f"{line} {text}" if text else line) or None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def parse_push(key: str, body: bytes) -> Push120:
    """The parts of a 120 JSON record (docs/alerts.md, version 1) the demo prints."""
    record = json.loads(body)
    if not isinstance(record, dict):
        raise TypeError("the 120 record is not a JSON object")
    alert = _object(record.get("alert"))
    resident = _object(record.get("resident"))
    profile = record.get("profile")
    prof = profile if isinstance(profile, dict) else {}
    alert_id = alert.get("id")
    return Push120(
        idempotency_key=key,
        alert_id=alert_id if isinstance(alert_id, int) else None,
        kind=alert.get("kind"),
        elder_name=resident.get("name"),
        address=_address_line(resident.get("address")),
        conditions=_strings(prof.get("conditions")),
        allergies=_strings(prof.get("allergies")),
        blood_type=prof.get("blood_type"),
        has_profile=isinstance(profile, dict),
    )


class DemoReceiver:
    """The 120 centre and the phones, on ``127.0.0.1`` in a thread of its own.

    Args:
        secret: The 120 push secret shared with the delivery worker.
        host: Address to bind (loopback: nothing outside the machine is told anything).
        port: 0 picks a free port.
        script: Status codes answered to the first requests, in order (a centre that is down
            answers 503), then ``default``. A 2xx is handled as usual.
        default: The answer after the script (200: handle the request).
        pause_on: 1-based numbers of the requests to answer only after ``pause_s``.
        pause_s: How long those wait before answering (after being counted).
        keep: Arrivals kept (later ones are counted only).
    """

    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        script: Sequence[int] = (),
        default: int = 200,
        pause_on: frozenset[int] = frozenset(),
        pause_s: float = 0.0,
        keep: int = 1000,
    ) -> None:
        self._secret = secret
        self._script = list(script)
        self._default = default
        self._pause_on = pause_on
        self._pause_s = pause_s
        self._keep = keep
        self._arrivals: list[Arrival] = []
        self._n_requests = 0
        self._lock = threading.Lock()
        self._keys: set[str] = set()
        self._pushes: list[Push120] = []
        self._messages: list[PhoneMessage] = []
        self._n_pushes = 0
        self._bad = 0
        self._dups = 0
        self._by_recipient: Counter[str] = Counter()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- addresses -----------------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def dispatch120_url(self) -> str:
        return f"http://{self.host}:{self.port}{PUSH_PATH}"

    @property
    def url(self) -> str:
        """The 120 push URL (:attr:`dispatch120_url`)."""
        return self.dispatch120_url

    def phone_url(self, who: str) -> str:
        """The apprise URL of a phone of the demo (``who``: letters, digits, '-', '{}')."""
        return f"json://{self.host}:{self.port}{PHONE_PREFIX}{who}"

    # -- life ----------------------------------------------------------------------------
    def start(self) -> DemoReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name="demo-receiver", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> DemoReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- what arrived --------------------------------------------------------------------
    def totals(self) -> ReceiverTotals:
        with self._lock:
            return ReceiverTotals(
                self._n_pushes, self._bad, self._dups, Counter(self._by_recipient)
            )

    def pushes(self) -> list[Push120]:
        with self._lock:
            return list(self._pushes)

    def messages(self) -> list[PhoneMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def arrivals(self) -> list[Arrival]:
        """Every request kept, in order of arrival."""
        with self._lock:
            return list(self._arrivals)

    @property
    def accepted(self) -> dict[str, int]:
        """Idempotency keys accepted, each once (repeats are dropped, see ``duplicate``)."""
        with self._lock:
            return dict.fromkeys(self._keys, 1)

    def first_accepted(self) -> list[Arrival]:
        """The arrivals accepted the first time (2xx, not a repeat)."""
        return [a for a in self.arrivals if 200 <= a.status < 300 and not a.duplicate]

    # -- handling ------------------------------------------------------------------------
    def _first_time(self, key: str | None) -> bool:
        """Whether ``key`` is new (no key: always); counts a duplicate. Under the lock."""
        if key is None:
            return True
        if key in self._keys:
            self._dups += 1
            return False
        self._keys.add(key)
        return True

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, float]:
        """Answer one request: (status, seconds to wait before answering)."""
        with self._lock:
            self._n_requests += 1
            number = self._n_requests
            k = number - 1
            scripted = self._script[k] if k < len(self._script) else self._default
        key = headers.get("idempotency-key")
        signature_ok = False
        duplicate = False
        if path == PUSH_PATH:
            signature_ok = verify_push(self._secret, headers, body, now=time.time())
            status = scripted if signature_ok and key else HTTPStatus.UNAUTHORIZED
            if 200 <= status < 300:
                status, duplicate = self._accept_push(key or "", headers, body)
            elif status == HTTPStatus.UNAUTHORIZED:
                with self._lock:
                    self._bad += 1
        elif path.startswith(PHONE_PREFIX) and len(path) > len(PHONE_PREFIX):
            status = scripted
            if 200 <= status < 300:
                status, duplicate = self._accept_message(path[len(PHONE_PREFIX) :], key, body)
        else:
            status = HTTPStatus.NOT_FOUND
        with self._lock:
            if len(self._arrivals) < self._keep:
                arrival = Arrival(
                    key, path, headers, body, signature_ok, int(status), duplicate,
                    time.monotonic(),
                )  # fmt: skip
                self._arrivals.append(arrival)
        return int(status), self._pause_s if number in self._pause_on else 0.0

    def _accept_push(self, key: str, headers: dict[str, str], body: bytes) -> tuple[int, bool]:
        try:
            if headers.get("content-type", "").startswith("application/cap+xml"):
                # CAP 1.2 (ANXIN_ALERTS__DISPATCH120_FORMAT=cap): kept as it came.
                push = Push120(key, None, "cap", None, None, (), (), None, has_profile=False)
            else:
                push = parse_push(key, body)
        except (ValueError, TypeError):  # not JSON, or not the record's shape
            return HTTPStatus.BAD_REQUEST, False
        with self._lock:
            if not self._first_time(key):
                return HTTPStatus.OK, True
            self._n_pushes += 1
            if len(self._pushes) < KEEP:
                self._pushes.append(push)
        return HTTPStatus.OK, False

    def _accept_message(self, recipient: str, key: str | None, body: bytes) -> tuple[int, bool]:
        try:
            payload = json.loads(body)
        except ValueError:
            return HTTPStatus.BAD_REQUEST, False
        if not isinstance(payload, dict):
            return HTTPStatus.BAD_REQUEST, False
        message = PhoneMessage(
            key, recipient, str(payload.get("title") or ""), str(payload.get("message") or "")
        )
        with self._lock:
            if not self._first_time(key):
                return HTTPStatus.OK, True
            self._by_recipient[recipient] += 1
            if len(self._messages) < KEEP:
                self._messages.append(message)
        return HTTPStatus.OK, False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # As a dispatch centre's server would: answers are not held back by Nagle.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                    return
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died halfway through its request: nothing arrived.
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = self.path.split("?", 1)[0]
                status, pause_s = receiver.handle(path, headers, body)
                if pause_s:
                    time.sleep(pause_s)
                # The sender may have given up or died while we paused: as at a real centre.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer(status)

            def _answer(self, status: int) -> None:
                data = json.dumps({"status": HTTPStatus(status).phrase}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("receiver: %s", format % args)  # http.server's own %-format

        return Handler
