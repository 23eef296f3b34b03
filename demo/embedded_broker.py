"""amqtt's MQTT broker in a thread of its own, for the demo (see :mod:`demo.embedded`)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from demo.embedded import (
    INSTALL_HINT,
    EmbeddedError,
    free_port,
)

log = logging.getLogger(__name__)


def _accept_all_auth() -> type[Any]:
    """amqtt's auth plugin base, imported only when a broker starts (an optional dependency)."""
    from amqtt.plugins.base import BaseAuthPlugin  # noqa: PLC0415 - optional dependency
    from amqtt.session import Session  # noqa: PLC0415

    class AcceptAllAuth(BaseAuthPlugin):  # type: ignore[misc]
        """Accept every client as a named (not anonymous) one, so amqtt keeps the queued QoS 1
        messages of a ``clean_session=False`` session while its client is away."""

        @dataclass
        class Config:
            pass

        async def authenticate(self, *, session: Session) -> bool:
            return True

    AcceptAllAuth.__module__ = __name__
    AcceptAllAuth.__qualname__ = "AcceptAllAuth"
    return AcceptAllAuth


def __getattr__(name: str) -> Any:
    # amqtt loads plugins by dotted path ("demo.embedded_broker.AcceptAllAuth"); building the class on
    # first access keeps amqtt out of the import of this module.
    if name == "AcceptAllAuth":
        cls = _accept_all_auth()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EmbeddedBroker:
    """amqtt's MQTT broker on 127.0.0.1 in a background thread with its own event loop.

    Attributes:
        url: ``mqtt://127.0.0.1:<port>``.
    """

    def __init__(self, *, port: int | None = None, start_timeout_s: float = 15.0) -> None:
        self._port = port
        self.port = 0
        self._timeout = start_timeout_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}", "max_connections": 0}
            },
            # Only our auth plugin: amqtt's default set adds $SYS publishing and packet logging.
            "plugins": {f"{__name__}.AcceptAllAuth": {}},
        }

    async def _serve(self) -> None:
        from amqtt.broker import Broker  # noqa: PLC0415 - optional dependency

        self._stopping = asyncio.Event()
        broker = Broker(self._config())
        try:
            await broker.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await broker.shutdown()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:
            log.exception("embedded MQTT broker failed")
            self._error = exc
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> Self:
        """Start listening; returns once the broker accepts connections.

        Raises:
            EmbeddedError: amqtt is not installed or the broker did not start.
        """
        if importlib.util.find_spec("amqtt") is None:
            raise EmbeddedError(f"The amqtt package is not installed. {INSTALL_HINT}")
        self.port = self._port or free_port()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            self.stop()
            raise EmbeddedError(
                f"The embedded MQTT broker did not start within {self._timeout:.0f} s."
            )
        if self._error is not None:
            error = self._error
            self.stop()
            raise EmbeddedError(f"The embedded MQTT broker did not start: {error}") from error
        log.info("embedded MQTT broker (amqtt) on 127.0.0.1:%d", self.port)
        return self

    def stop(self) -> None:
        """Disconnect every client and stop the broker. Safe to call twice."""
        thread, self._thread = self._thread, None
        loop, stopping = self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=15)
        if thread.is_alive():
            log.warning("embedded MQTT broker did not stop within 15 s")

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def start_embedded_broker(**kwargs: Any) -> EmbeddedBroker:
    """Start an :class:`EmbeddedBroker` (keyword arguments as its constructor's); use it as a
    context manager or call :meth:`EmbeddedBroker.stop`."""
    return EmbeddedBroker(**kwargs).start()
