"""Several server processes on one port: the supervisor behind ``CONSENT_PROCESSES=N``.

A Python process serves gRPC on one core. With N > 1, ``python -m consent_server``
becomes a small supervisor that starts N copies of itself (fresh interpreters, never a
fork of a process holding gRPC or Redis state). Each binds the gRPC port (and the HTTP
edge's) with ``SO_REUSEPORT``, so the kernel spreads new connections over them, and
serves ``grpc.health.v1`` itself. The supervisor:

- validates the configuration and reserves the ports before starting anything: bad
  configuration is still one line and exit 2, and ``:0`` becomes one real port that
  every process (and every restart) binds;
- logs "consent authority serving" once every process serves;
- restarts a process that died, with exponential backoff; a process that exits 2 (bad
  configuration, e.g. a file that cannot be read) stops everything with exit 2, and one
  that keeps dying before it serves makes the supervisor give up (exit 1) instead of
  looping;
- forwards SIGTERM/SIGINT (every process drains, then it exits 0) and, with TLS,
  SIGHUP (reload the certificate files);
- keeps Prometheus metrics whole: the processes write prometheus-client's multiprocess
  files into a private directory, and the supervisor alone serves
  ``CONSENT_METRICS_LISTEN``, summing them.

The inline delivery worker (``CONSENT_DELIVERY=inline``) runs in the first process only,
so that ``CONSENT_DELIVERY_CONCURRENCY`` keeps its meaning whatever N is; when that
process is restarted, its claimed messages are taken over after the visibility timeout.
Production runs workers apart (``CONSENT_DELIVERY=off`` and
``python -m consent_server.worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from consent_server.config import ConfigError, Settings
from consent_server.logs import real_stderr_fd

log = logging.getLogger("consent_server.supervisor")

#: Set (internally) in a supervised process: "<index>:<readiness pipe fd>:<supervisor pid>".
CHILD_ENV = "CONSENT_SUPERVISED_PROCESS"
#: Restart backoff: first delay, cap, and how long a process must live to reset it.
BACKOFF_S, BACKOFF_MAX_S, HEALTHY_S = 0.2, 10.0, 10.0
#: Consecutive deaths before serving after which the supervisor gives up.
MAX_START_FAILURES = 5
_PR_SET_PDEATHSIG = 1


@dataclass(slots=True)
class _Slot:
    """One of the N process slots and the process currently in it."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    serving: bool = False
    failures: int = 0  # consecutive deaths before serving for long
    starts: int = 0


def _reserve(var: str, listen: str) -> tuple[socket.socket, str]:
    """Bind (not listen) ``listen`` with SO_REUSEPORT for the supervisor's lifetime.

    The processes join that port; nobody else can take it between restarts, and ``:0``
    becomes one real port. A port already in use is a ConfigError naming ``var``.
    """
    host, _, port_text = listen.rpartition(":")
    bare = host.strip("[]")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            bare or None, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        if addr[1] != 0:
            # Without SO_REUSEPORT this bind fails if anyone listens there, even a
            # server that allows sharing: a second deployment must not join ours.
            with socket.socket(family, kind, proto) as probe:
                probe.bind(addr)
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ConfigError(f"{var}={listen!r}: cannot listen there ({why})") from None
    return sock, f"{host}:{sock.getsockname()[1]}"


def _store_up(registry: CollectorRegistry) -> bool | None:
    """The lowest ``consent_store_up`` of the live processes; None before any probed."""
    values = [
        sample.value
        for family in registry.collect()
        if family.name == "consent_store_up"
        for sample in family.samples
    ]
    return min(values) == 1 if values else None


def _serve_metrics(listen: str | None, directory: str, serving: Callable[[], bool]) -> None:
    """The one /metrics of all processes (the sum of their multiprocess files), and
    /readyz: every process serves and every process's store probe succeeds."""
    if not listen:
        return
    from prometheus_client import multiprocess

    from consent_server.metrics import start_metrics_server

    registry = CollectorRegistry()
    # prometheus_client leaves its multiprocess API unannotated; these are its types.
    collector: Callable[..., object] = multiprocess.MultiProcessCollector
    collector(registry, path=directory)

    def ready() -> tuple[bool, str]:
        if not serving():
            return False, "not every server process serves"
        up = _store_up(registry)
        if up is not True:
            return False, "consent store unavailable" if up is False else "store not probed yet"
        return True, ""

    try:
        start_metrics_server(listen, registry=registry, ready=ready)
    except OSError as exc:
        raise ConfigError(
            f"CONSENT_METRICS_LISTEN={listen!r}: cannot listen there ({exc.strerror or exc})"
        ) from None
    log.info("metrics serving (all processes)", extra={"address": listen})


class Supervisor:
    """Starts, restarts and stops the N server processes; see the module docstring."""

    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.n = settings.processes
        self.slots = [_Slot(i) for i in range(self.n)]
        self.stopping = False
        self.exit_code = 0
        self._wake = asyncio.Event()  # set once stopped
        self._changed = asyncio.Event()  # a process started serving or died
        self._sockets: list[socket.socket] = []
        self._metrics_dir = ""
        self._child_args: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def _prepare(self) -> None:
        """Everything that can fail for bad configuration, before any process starts."""
        s = self.settings
        grpc_sock, listen = _reserve("CONSENT_LISTEN", s.server.listen)
        self._sockets.append(grpc_sock)
        self.listen = listen
        extra = ["--listen", listen, "--metrics-listen="]
        if s.edge.listen:
            http_sock, http_listen = _reserve("CONSENT_HTTP_LISTEN", s.edge.listen)
            self._sockets.append(http_sock)
            extra += ["--http-listen", http_listen]
        self._child_args = [*self.argv, *extra]
        self._metrics_dir = tempfile.mkdtemp(prefix="consent-metrics-")
        _serve_metrics(
            s.observability.metrics_listen,
            self._metrics_dir,
            lambda: not self.stopping and all(slot.serving for slot in self.slots),
        )

    def _command(self, slot: _Slot) -> list[str]:
        args = [sys.executable, "-m", "consent_server", *self._child_args]
        if slot.index > 0 and self.settings.delivery.mode == "inline":
            args += ["--delivery", "off"]  # the inline worker runs in process 0 only
        return args

    async def _start(self, slot: _Slot) -> None:
        read_fd, write_fd = os.pipe()
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir,
            CHILD_ENV: f"{slot.index}:{write_fd}:{os.getpid()}",
        }
        slot.serving = False
        slot.starts += 1
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                *self._command(slot),
                env=env,
                pass_fds=(write_fd,),
                # The real stderr, not this process's capture of gRPC core's lines.
                stderr=real_stderr_fd(),
            )
        finally:
            os.close(write_fd)
        if self.stopping:  # told to stop while this one was being started
            slot.proc.send_signal(signal.SIGTERM)
        slot.started = time.monotonic()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        task = asyncio.create_task(self._watch(slot, slot.proc, reader, transport))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(
        self,
        slot: _Slot,
        proc: asyncio.subprocess.Process,
        ready: asyncio.StreamReader,
        transport: asyncio.BaseTransport,
    ) -> None:
        """Wait for the process to say it serves, then for it to exit."""
        if await ready.read(1):
            slot.serving = True
            self._changed.set()
            if slot.starts > 1:
                log.info("server process restarted", extra={"pid": proc.pid, "slot": slot.index})
        transport.close()
        code = await proc.wait()
        with contextlib.suppress(Exception):
            from prometheus_client import multiprocess

            mark_dead: Callable[[int, str], None] = multiprocess.mark_process_dead
            mark_dead(proc.pid, self._metrics_dir)
        if self.stopping:
            return
        try:
            await self._died(slot, proc.pid, code)
        except Exception:  # a supervisor that cannot restart must not serve on half-blind
            log.exception("supervisor failed to restart a server process; stopping")
            await self.stop(1)
        self._changed.set()

    async def _died(self, slot: _Slot, pid: int, code: int) -> None:
        lived = time.monotonic() - slot.started
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        if code == 2:
            log.error(
                "server process refused its configuration; stopping",
                extra={"pid": pid, "slot": slot.index},
            )
            await self.stop(2)
            return
        slot.failures = 0 if slot.serving and lived >= HEALTHY_S else slot.failures + 1
        if not slot.serving and slot.failures >= MAX_START_FAILURES:
            log.error(
                "server process keeps dying before it serves; giving up",
                extra={"pid": pid, "slot": slot.index, "exit": how},
            )
            await self.stop(1)
            return
        delay = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** max(0, slot.failures - 1))
        log.error(
            "server process died; restarting",
            extra={"pid": pid, "slot": slot.index, "exit": how, "restart_in_s": delay},
        )
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._start(slot)

    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    async def stop(self, code: int = 0) -> None:
        """Drain every process (SIGTERM), SIGKILL those past the grace period."""
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = code
        log.info("supervisor stopping: draining every process", extra={"processes": self.n})
        procs = [s.proc for s in self.slots if s.proc is not None and s.proc.returncode is None]
        self._signal_all(signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.settings.server.shutdown_grace_s + 5)
            if late:
                self._signal_all(signal.SIGKILL)
                await asyncio.wait(late)
        # -SIGTERM: stopped before it installed its handlers, with nothing to drain yet.
        if code == 0 and any(p.returncode not in (0, -signal.SIGTERM) for p in procs):
            self.exit_code = 1
        self._wake.set()
        self._changed.set()

    def _stop_soon(self) -> None:
        task = asyncio.ensure_future(self.stop(0))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reload(self) -> None:
        if self.settings.tls.enabled:
            self._signal_all(signal.SIGHUP)

    async def run(self) -> int:
        """Serve with N processes until SIGTERM/SIGINT; the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_soon)
        # SIGHUP re-reads the TLS files; a process without TLS has no use for it (and
        # would die of it).
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            self._prepare()
            for slot in self.slots:
                if not self.stopping:
                    await self._start(slot)
            while not self.stopping and not all(s.serving for s in self.slots):
                self._changed.clear()
                await self._changed.wait()
            if not self.stopping and all(s.serving for s in self.slots):
                log.info(
                    "consent authority serving",
                    extra={
                        "address": self.listen,
                        "processes": self.n,
                        "pids": [s.proc.pid for s in self.slots if s.proc is not None],
                        "pid": os.getpid(),
                    },
                )
            await self._wake.wait()
            log.info("stopped", extra={"exit": self.exit_code})
            return self.exit_code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for sock in self._sockets:
                sock.close()
            if self._metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)


def supervised() -> tuple[int, Callable[[], None]] | None:
    """In a process the supervisor started: its index and the "I serve" callback.

    It also asks the kernel to SIGTERM this process if the supervisor dies (even by
    SIGKILL), so that no orphan keeps serving the port.
    """
    spec = os.environ.pop(CHILD_ENV, None)
    if spec is None:
        return None
    index_text, fd_text, parent_text = spec.split(":")
    fd = int(fd_text)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent_text):  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)

    def serving() -> None:
        with contextlib.suppress(OSError):
            os.write(fd, b"1")
            os.close(fd)

    return int(index_text), serving


async def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run ``settings.processes`` server processes until SIGTERM/SIGINT."""
    return await Supervisor(settings, argv).run()
