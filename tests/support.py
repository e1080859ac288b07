"""Real components for tests: a redis-server on a free port in a temp dir, and the
consent server as a separate process spoken to over gRPC, like a user would; and the
consent events the store tests record."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
import redis

from bench.procs import free_port, redis_server_args
from consent_server.domain.model import Action, Channel, ConsentEventInput, Recipient, Source
from consent_server.domain.service import ChangeResult, ConsentAuthority
from consent_server.domain.validation import RawMessage, RawRecipient, RawTimestamp

if TYPE_CHECKING:
    from consent_client.v1 import consent_pb2

REDIS_SERVER = shutil.which("redis-server")

#: Tenants exist only once created. Every store and server process of the test suite
#: pre-creates these (the ids tests name literally); new tests use "acme" and "globex".
#: The ``tenant`` fixture's per-test ids are created by the fixtures that need them.
TEST_TENANTS = ("acme", "globex", "meals", "other", "t", "a")


def tenant_id_for(node: Any) -> str:
    """The tenant id unique to a test item (the ``tenant`` fixture)."""
    return "t-" + hashlib.sha1(node.nodeid.encode()).hexdigest()[:16]


async def create_tenants(store: Any, ids: Iterable[str] = TEST_TENANTS) -> None:
    """Create ``ids`` in a RedisConsentStore (in-process tests)."""
    from consent_server.domain.tenants import TenantRegistry
    from consent_server.store.tenants import RedisTenantStore

    await TenantRegistry(RedisTenantStore(store)).ensure(ids)


def create_tenant_everywhere(tenant_id: str) -> None:
    """Create ``tenant_id`` in every running server process that can be reached in
    plain text (with its bootstrap operator key when it has one; others are left), and
    in every server the test starts from now on (``ServerProcess.wanted``)."""
    ServerProcess.wanted.add(tenant_id)
    for srv in list(ServerProcess.live):
        if not srv.target or (srv.proc is not None and srv.proc.poll() is not None):
            continue
        # TLS-only or unreachable servers are left: such tests create their tenants.
        with contextlib.suppress(grpc.RpcError):
            create_tenant_on(srv.target, tenant_id, srv.env.get("CONSENT_BOOTSTRAP_ADMIN_KEY"))


def create_tenant_on(target: str, tenant_id: str, api_key: str | None = None) -> None:
    """Create a tenant in a running server over gRPC (anonymous on loopback, or with an
    operator ``api_key``); an existing one is fine."""
    from consent_client.v1 import admin_pb2, admin_pb2_grpc

    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
    with grpc.insecure_channel(target) as ch:
        try:
            admin_pb2_grpc.ConsentAdminServiceStub(ch).CreateTenant(
                admin_pb2.CreateTenantRequest(tenant_id=tenant_id), timeout=10, metadata=metadata
            )
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.ALREADY_EXISTS:
                raise


#: When the numbered test events happen (``numbered_event``'s ``seq`` counts from it).
EVENT_T0 = 1_700_000_000_000


def consent_event(
    tenant_id: str,
    recipient: Recipient,
    *,
    event_id: str,
    action: Action = Action.OPT_OUT,
    topic: str = "",
    occurred_at_ms: int = EVENT_T0,
    evidence: str = "",
    principal: str = "test",
) -> ConsentEventInput:
    """A consent event from the API, as the store records it."""
    return ConsentEventInput(
        tenant_id=tenant_id,
        recipient=recipient,
        topic=topic,
        action=action,
        source=Source.API,
        evidence=evidence,
        occurred_at_ms=occurred_at_ms,
        event_id=event_id,
        principal=principal,
    )


async def send_text(
    authority: ConsentAuthority,
    tenant_id: str,
    recipient: RawRecipient,
    topic: str,
    text: str,
    *,
    not_after: RawTimestamp | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """SendIfAllowed of a text message (no idempotency key): the accepted message's id."""
    result = await authority.send(
        tenant_id=tenant_id,
        recipient=recipient,
        topic=topic,
        message=RawMessage("text", text=text),
        idempotency_key="",
        not_after=not_after,
        metadata=metadata or {},
    )
    return result.accepted.message_id


async def change_consent(
    authority: ConsentAuthority,
    action: Action,
    tenant_id: str,
    recipient: RawRecipient,
    topic: str = "",
    *,
    source: Source = Source.API,
    evidence: str = "",
    occurred_at: RawTimestamp | None = None,
) -> ChangeResult:
    """OptOut / OptIn as a request asks for it (no event id): the authority's result."""
    return await authority.change(
        action,
        tenant_id=tenant_id,
        recipient=recipient,
        topic=topic,
        source=source,
        evidence=evidence,
        occurred_at=occurred_at,
        event_id="",
    )


def text_send_request(
    tenant_id: str,
    recipient: consent_pb2.Recipient,
    text: str,
    *,
    topic: str = "marketing",
    **fields: Any,
) -> consent_pb2.SendIfAllowedRequest:
    """A gRPC SendIfAllowed request of a text message (``fields``: the rest of the
    request, such as ``idempotency_key``); a promotion unless ``topic`` says otherwise."""
    from consent_client.v1 import consent_pb2

    return consent_pb2.SendIfAllowedRequest(
        tenant_id=tenant_id,
        recipient=recipient,
        topic=topic,
        message=consent_pb2.Message(text=text),
        **fields,
    )


def raw_ts(ms: int) -> RawTimestamp:
    """Unix milliseconds as a request carries them (seconds and nanos)."""
    return RawTimestamp(ms // 1000, (ms % 1000) * 1_000_000)


def numbered_recipient(n: int) -> Recipient:
    """Test recipient ``n``: an SMS number of its own."""
    return Recipient(Channel.SMS, f"+1415555{n:04d}")


def numbered_event(
    tenant_id: str, n: int, seq: int, *, action: Action = Action.OPT_OUT, topic: str = ""
) -> ConsentEventInput:
    """Recipient ``n``'s event ``seq`` (later ``seq``, later event; one id per pair)."""
    return consent_event(
        tenant_id,
        numbered_recipient(n),
        event_id=f"ev-{n}-{seq}",
        action=action,
        topic=topic,
        occurred_at_ms=EVENT_T0 + seq,
    )


def run_module(
    module: str, *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m module *args`` with exactly ``env``, waited for until it exits on its
    own (a start-up that must fail, a one-shot command); its output as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class RedisProcess:
    """A private redis-server: free port, its own directory, never the machine's 6379."""

    def __init__(
        self, workdir: Path, *, appendonly: bool = False, password: str | None = None
    ) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (make install / .ci/run installs it)")
        self.binary = REDIS_SERVER
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.password = password  # requirepass, when given
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        args = redis_server_args(self.binary, self.port, self.workdir, appendonly=self.appendonly)
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.paused = False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: a hung Redis that accepts connections but never answers."""
        assert self.proc and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause(); Redis then runs whatever was queued on its sockets."""
        assert self.proc and self.proc.poll() is None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def resume_if_paused(self) -> None:
        """Clean-up: a paused Redis ignores SIGTERM until it is continued."""
        if self.paused and self.proc and self.proc.poll() is None:
            self.resume()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def auth_env(redis: RedisProcess, operator: str) -> dict[str, str]:
    """The environment of a server on ``redis`` that requires API keys, takes ``operator``
    as its bootstrap operator key and runs no delivery worker (sent messages stay queued)."""
    return {
        "CONSENT_REDIS_URL": redis.url,
        "CONSENT_REQUIRE_AUTH": "1",
        "CONSENT_BOOTSTRAP_ADMIN_KEY": operator,
        "CONSENT_DELIVERY": "off",
    }


class ServerProcess:
    """``python -m consent_server`` on a free port, with the given environment."""

    #: The server processes running now: the ``tenant`` fixture creates its tenant in each.
    live: ClassVar[list[ServerProcess]] = []
    #: The current test's own tenant ids: a server the test starts creates them too.
    wanted: ClassVar[set[str]] = set()

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        args: list[str] | None = None,
        http: bool = False,
    ) -> None:
        # One process unless a test asks for more: the supervisor of CONSENT_PROCESSES > 1
        # has tests of its own (test_processes.py), and the machine running tests is shared.
        self.env = {
            **os.environ,
            "CONSENT_LOG_LEVEL": "info",
            "CONSENT_PROCESSES": "1",
            "CONSENT_TENANTS": ",".join(TEST_TENANTS),
            **(env or {}),
        }
        # http=True: also serve the HTTP edge on a free loopback port (self.http_url).
        self.http_url = ""
        if http:
            self.env["CONSENT_HTTP_LISTEN"] = f"127.0.0.1:{free_port()}"
            self.http_url = "http://" + self.env["CONSENT_HTTP_LISTEN"]
        self.env.pop(
            "CONSENT_REDIS_URL", None
        ) if env is not None and "CONSENT_REDIS_URL" not in env else None
        self.args = args or []
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.target = ""
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 20, *, wait_serving: bool = True) -> ServerProcess:
        """Start and wait for the "serving" log line (and, unless told not to, for
        health SERVING: a server whose Redis is down starts but stays NOT_SERVING)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consent_server", "--listen", "127.0.0.1:0", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        http_ready = threading.Event()
        if not self.http_url:
            http_ready.set()

        def read() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.lines.append(line)
                if not self.target and '"consent authority serving"' in line:
                    self.target = json.loads(line)["address"]
                    ready.set()
                if '"http edge serving"' in line:
                    http_ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        ServerProcess.live.append(self)
        if wait_serving:
            self.wait_serving(timeout)
            for tenant_id in sorted(ServerProcess.wanted):
                create_tenant_on(
                    self.target, tenant_id, self.env.get("CONSENT_BOOTSTRAP_ADMIN_KEY")
                )
        if not http_ready.wait(timeout):
            self.kill()
            raise RuntimeError("HTTP edge did not start:\n" + "".join(self.lines))
        return self

    def health_channel(self) -> grpc.Channel:
        """The channel readiness is probed on (TlsServerProcess: a TLS one)."""
        return grpc.insecure_channel(self.target)

    def wait_serving(self, timeout: float = 20) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with self.health_channel() as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise RuntimeError("server never became SERVING:\n" + self.log())

    def health(self, service: str = "", timeout: float = 2) -> int | None:
        """The health status the server reports for ``service`` now; None if no answer."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout
                )
            except grpc.RpcError:
                return None
            return int(resp.status)

    def wait_health(self, status: int, timeout: float = 15, service: str = "") -> float:
        """Wait until health reports ``status``; return the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.health(service) == status:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(
            f"health of {service!r} never became {status} within {timeout}s:\n" + self.log()
        )

    def log(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Say where shutdown stuck: the server's own log, not just "timed out".
            raise AssertionError(
                f"server did not exit within {timeout}s; its log:\n" + self.log()[-6000:]
            ) from None
        if self._reader:
            self._reader.join(5)
        return code

    def stop(self) -> int:
        if self in ServerProcess.live:
            ServerProcess.live.remove(self)
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            return self.wait()
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        if self in ServerProcess.live:
            ServerProcess.live.remove(self)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
