"""A real HTTP server standing in for a delivery provider (webhook receiver or the
WhatsApp Cloud API), on a free loopback port in a thread.

It records every request, answers from a script of responses (then a default 200),
can hold requests until released (to kill a worker mid-call), and, like a provider
that honours idempotency keys, counts a message once however often it is re-sent.

It listens on loopback, which the egress guard refuses by default: a server or worker
delivering to it needs ``CONSENT_EGRESS_ALLOW=<fake.allow>`` (or ``fake.policy``), and
without that it doubles as the internal service that must never be reached.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consent_server.domain.egress import EgressPolicy


@dataclass
class Seen:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeProvider:
    """See the module docstring. ``url`` is its base URL."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.script: list[tuple[int, Any] | tuple[int, Any, dict[str, str]]] = []
        self.delivered: dict[str, str] = {}  # idempotency key -> provider id
        self.hold = threading.Event()
        self.hold.set()  # set = answer at once
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with fake._lock:
                    fake.requests.append(
                        Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    fake.arrived.set()
                fake.hold.wait(30)
                with fake._lock:
                    headers: dict[str, str] = {}
                    if fake.script:
                        status, answer, *rest = fake.script.pop(0)
                        headers = rest[0] if rest else {}
                    else:
                        key = self.headers.get("Idempotency-Key") or f"k{len(fake.requests)}"
                        pid = fake.delivered.setdefault(key, f"prov-{len(fake.delivered) + 1}")
                        status = 200
                        answer = (
                            {"messages": [{"id": pid}]} if "/messages" in self.path else {"id": pid}
                        )
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller died while we held its request

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default 5 refuses bursts from concurrent workers

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def allow(self) -> str:
        """The CONSENT_EGRESS_ALLOW entry that lets delivery reach this fake (only it)."""
        return f"127.0.0.1:{self.port}"

    @property
    def policy(self) -> EgressPolicy:
        """The egress policy that lets delivery reach this fake (only it)."""
        from consent_server.domain.egress import EgressPolicy

        return EgressPolicy.parse(self.allow)

    def start(self) -> FakeProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.hold.set()
        self._server.shutdown()
        self._server.server_close()

    def answer(self, *responses: tuple[int, Any] | tuple[int, Any, dict[str, str]]) -> None:
        """Answer the next requests with these (status, JSON[, headers]), in order."""
        with self._lock:
            self.script.extend(responses)


@contextmanager
def fake_provider() -> Iterator[FakeProvider]:
    fake = FakeProvider().start()
    try:
        yield fake
    finally:
        fake.stop()
