"""Every core serves: CONSENT_PROCESSES=N server processes on one port under the supervisor,
and bursts of concurrent calls on a fresh channel.

Real components only: the server process (``python -m consent_server``) on a private
redis-server, spoken to over gRPC. Which process answered is read from ``/proc``: the
server end of every client connection belongs to exactly one child process.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from consent_client._client import RECONNECT_OPTIONS
from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pbg
from consent_server.config import ConfigError, cores, load
from consent_server.supervisor import MAX_START_FAILURES, Supervisor

from .support import RedisProcess, ServerProcess, free_port, run_module, text_send_request

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")

TENANT = "acme"
WA = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="+14155550100")
CHECK = pb.CheckConsentRequest(tenant_id=TENANT, recipient=WA, topic="marketing")
# Each channel its own connection: grpc otherwise shares one among channels to a target.
# Each channel its own connection, reconnecting as the thin client's channels do.
OWN = [("grpc.use_local_subchannel_pool", 1), *RECONNECT_OPTIONS]


# -- reading /proc: which process holds the server end of which connection --


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the supervisor's server processes)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(int(m[1]))
    return inodes


def _tcp_rows() -> Iterator[tuple[int, int, int, int]]:
    """(local port, state, rx_queue, inode) of every TCP socket of this machine."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:]
        for line in lines:
            f = line.split()
            port = int(f[1].rsplit(":", 1)[1], 16)
            rx = int(f[4].split(":")[1], 16)
            yield port, int(f[3], 16), rx, int(f[9])


ESTABLISHED = 1


def connections_by_pid(pids: list[int], port: int) -> Counter[int]:
    """How many established connections to ``port`` each of ``pids`` serves."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found: Counter[int] = Counter()
    for local, state, _, inode in _tcp_rows():
        if local == port and state == ESTABLISHED and inode in owner:
            found[owner[inode]] += 1
    return found


def queued_at(port: int) -> int:
    """Established connections to ``port`` with unread bytes waiting (a paused Redis)."""
    return sum(
        1 for local, state, rx, _ in _tcp_rows() if local == port and state == ESTABLISHED and rx
    )


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` that still exist."""
    return [p for p in pids if Path(f"/proc/{p}").exists()]


def port_of(srv: ServerProcess) -> int:
    return int(srv.target.rsplit(":", 1)[1])


# -- fixtures --


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("proc-redis")).start()
    yield proc
    proc.resume_if_paused()
    proc.stop()


def supervised(redis_srv: RedisProcess, **env: str) -> ServerProcess:
    return ServerProcess(
        {
            "CONSENT_REDIS_URL": redis_srv.url,
            "CONSENT_DELIVERY": "off",
            "CONSENT_PROCESSES": "2",
            **env,
        }
    ).start()


@pytest.fixture
def two(redis_srv: RedisProcess) -> Iterator[ServerProcess]:
    """The server with CONSENT_PROCESSES=2 and a metrics listener."""
    srv = supervised(redis_srv, CONSENT_METRICS_LISTEN=f"127.0.0.1:{free_port()}")
    yield srv
    srv.stop()


# -- configuration --


def test_default_is_one_process_per_core_on_redis_and_one_on_the_embedded_store() -> None:
    assert load([], {}).processes == 1
    assert load([], {"CONSENT_REDIS_URL": "redis://127.0.0.1:1/0"}).processes == cores()
    assert load(["--processes", "3"], {"CONSENT_REDIS_URL": "redis://x:1/0"}).processes == 3
    assert load([], {"CONSENT_PROCESSES": "1"}).processes == 1


def test_several_processes_on_the_embedded_store_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^CONSENT_PROCESSES=2: .*CONSENT_REDIS_URL"):
        load([], {"CONSENT_PROCESSES": "2"})
    with pytest.raises(ConfigError, match=r"^CONSENT_PROCESSES='0': must be between 1 and"):
        load([], {"CONSENT_PROCESSES": "0"})


def _run_server(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_module("consent_server", *args, env={**os.environ, **env})


def test_bad_configuration_stops_the_supervisor_with_one_line_and_exit_2() -> None:
    done = _run_server([], {"CONSENT_PROCESSES": "2"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "consent-server: configuration error: CONSENT_PROCESSES=2: the embedded store lives "
        "in one process's memory and cannot be shared; set CONSENT_REDIS_URL or "
        "CONSENT_PROCESSES=1"
    ]


def test_a_port_in_use_is_found_before_any_process_starts(redis_srv: RedisProcess) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = _run_server(
            ["--listen", f"127.0.0.1:{port}"],
            {"CONSENT_PROCESSES": "2", "CONSENT_REDIS_URL": redis_srv.url},
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"consent-server: configuration error: CONSENT_LISTEN='127.0.0.1:{port}': "
        "cannot listen there (Address already in use)"
    ]
    assert "process serving" not in done.stdout + done.stderr


def test_a_second_server_cannot_join_the_port_of_a_supervised_one(
    two: ServerProcess, redis_srv: RedisProcess
) -> None:
    """Its processes share the port with each other, not with another deployment."""
    for processes in ("2", "1"):
        done = _run_server(
            ["--listen", two.target],
            {"CONSENT_PROCESSES": processes, "CONSENT_REDIS_URL": redis_srv.url},
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert (
            done.stderr.strip()
            .splitlines()[-1]
            .startswith(
                f"consent-server: configuration error: CONSENT_LISTEN='{two.target}': "
                "cannot listen there"
            )
        )


# -- serving --


def test_two_processes_both_serve_and_metrics_sum_over_them(two: ServerProcess) -> None:
    assert two.proc is not None
    pids = children(two.proc.pid)
    assert len(pids) == 2
    assert two.log().count('"process serving"') == 2
    # New connections are spread by the kernel: 24 of them all landing on one of two
    # processes has a probability of 2**-23.
    sends = 24
    channels = [grpc.insecure_channel(two.target, options=OWN) for _ in range(sends)]
    try:
        for i, ch in enumerate(channels):
            stub = pbg.ConsentServiceStub(ch)
            assert stub.CheckConsent(CHECK, timeout=10).allowed
            stub.SendIfAllowed(
                text_send_request(TENANT, WA, "hello", idempotency_key=f"metrics-{i}"), timeout=10
            )
        served = connections_by_pid(pids, port_of(two))
        assert sorted(served) == sorted(pids), served
        assert sum(served.values()) == sends
    finally:
        for ch in channels:
            ch.close()
    metrics_url = f"http://{two.env['CONSENT_METRICS_LISTEN']}/metrics"
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    accepted = re.search(r"^consent_messages_accepted_total (\S+)$", text, re.M)
    assert accepted is not None, text
    assert float(accepted[1]) == sends  # both processes' sends, summed once


@dataclass
class Load:
    """Concurrent CheckConsent callers, one channel each and one call in flight at a time.

    A call that fails is retried like the thin client retries a read (UNAVAILABLE, up to
    4 attempts, backoff 0.1 s doubling): ``retried`` records why each call needed it.
    """

    target: str
    callers: int = 16
    ok: int = 0
    retried: list[list[str]] = field(default_factory=list)  # a call's failed attempts
    failed_for_good: list[list[str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def caller(self) -> None:
        async with grpc.aio.insecure_channel(self.target, options=OWN) as ch:
            stub = pbg.ConsentServiceStub(ch)
            while not self.stop.is_set():
                failures: list[str] = []
                for attempt in range(4):
                    try:
                        await stub.CheckConsent(CHECK, timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        failures.append(f"{exc.code().name}: {exc.details()}")
                        if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                            break
                        await asyncio.sleep(0.1 * 2**attempt)
                    else:
                        self.ok += 1
                        break
                if failures:
                    done = len(failures) < 4 and failures[-1].startswith("UNAVAILABLE")
                    (self.retried if done else self.failed_for_good).append(failures)


async def _wait(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_sigkill_of_a_process_under_load_fails_only_its_calls_in_flight(
    two: ServerProcess,
) -> None:
    assert two.proc is not None
    supervisor = two.proc.pid
    pids = children(supervisor)
    port = port_of(two)
    load = Load(two.target)
    tasks = [asyncio.create_task(load.caller()) for _ in range(load.callers)]
    try:
        await _wait(
            lambda: sum(connections_by_pid(pids, port).values()) == load.callers and load.ok > 100,
            20,
            "every caller connected and calls answered",
        )
        served = connections_by_pid(pids, port)
        victim = max(served, key=lambda p: served[p])
        in_flight_at_most = served[victim]  # one call in flight per connection
        ok_before = load.ok
        os.kill(victim, signal.SIGKILL)
        # The supervisor brings a new process back, and it serves.
        await _wait(
            lambda: (
                len(set(children(supervisor)) - set(pids)) == 1
                and "server process restarted" in two.log()
            ),
            30,
            "the restarted process; log:\n" + two.log()[-3000:],
        )
        await _wait(lambda: load.ok > ok_before + 100, 20, "calls after the kill")
    finally:
        load.stop.set()
        await asyncio.gather(*tasks)
    assert not load.failed_for_good, load.failed_for_good
    # Only calls in flight on the killed process failed (at most one per connection it
    # served), each UNAVAILABLE (its connection was reset), and each succeeded when
    # retried, on a live process.
    assert len(load.retried) <= in_flight_at_most, (load.retried, served)
    assert all(w.startswith("UNAVAILABLE") for call in load.retried for w in call)
    assert '"server process died; restarting"' in two.log()
    (new,) = set(children(supervisor)) - set(pids)
    # Fresh connections reach the new process too: kernel spread, 40 tries.
    channels = []
    try:
        for _ in range(40):
            ch = grpc.aio.insecure_channel(two.target, options=OWN)
            channels.append(ch)
            assert (await pbg.ConsentServiceStub(ch).CheckConsent(CHECK, timeout=10)).allowed
            if connections_by_pid([new], port)[new]:
                break
        assert connections_by_pid([new], port)[new] >= 1
    finally:
        for ch in channels:
            await ch.close()


async def test_sigterm_drains_calls_in_flight_on_every_process_then_exits_0(
    redis_srv: RedisProcess,
) -> None:
    srv = supervised(redis_srv, CONSENT_REDIS_TIMEOUT="20", CONSENT_SHUTDOWN_GRACE="20")
    assert srv.proc is not None
    pids = children(srv.proc.pid)
    callers = 12
    channels = [grpc.aio.insecure_channel(srv.target, options=OWN) for _ in range(callers)]
    try:
        for ch in channels:  # connect each, so that both processes hold some
            await pbg.ConsentServiceStub(ch).CheckConsent(CHECK, timeout=10)
        served = connections_by_pid(pids, port_of(srv))
        assert sorted(served) == sorted(pids), served
        redis_srv.pause()
        calls = [
            asyncio.ensure_future(pbg.ConsentServiceStub(ch).CheckConsent(CHECK, timeout=30))
            for ch in channels
        ]
        # Calls wait in every server process, on its shared Redis connection (the
        # multiplexed one: one connection per process carries all its calls).
        await _wait(lambda: queued_at(redis_srv.port) >= len(pids), 20, "calls waiting on Redis")
        srv.signal(signal.SIGTERM)
        await _wait(lambda: srv.log().count("shutting down") == 2, 20, "both processes draining")
        assert srv.proc.poll() is None  # still draining: the calls are not done
        redis_srv.resume()
        answers = await asyncio.gather(*calls)
        assert all(a.allowed for a in answers)
    finally:
        redis_srv.resume_if_paused()
        for ch in channels:
            await ch.close()
    assert srv.wait(30) == 0
    assert srv.log().count('"stopped"') == 3  # two processes, then the supervisor
    assert not alive(pids)


# -- the supervisor's restart policy, with processes that die at once --


class _Dying(Supervisor):
    """The supervisor, its processes replaced by a program that exits with ``code``."""

    def __init__(self, code: int) -> None:
        settings = load(
            ["--processes", "2", "--listen", "127.0.0.1:0"],
            {"CONSENT_REDIS_URL": "redis://127.0.0.1:1/0"},
        )
        super().__init__(settings, [])
        self.code = code

    def _command(self, slot: object) -> list[str]:
        return [sys.executable, "-c", f"raise SystemExit({self.code})"]


async def test_a_process_refusing_its_configuration_stops_everything_with_exit_2(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = _Dying(2)
    assert await asyncio.wait_for(sup.run(), 30) == 2
    assert [s.starts for s in sup.slots] == [1, 1]  # never restarted
    assert "server process refused its configuration; stopping" in caplog.text


async def test_a_process_that_keeps_dying_before_serving_makes_the_supervisor_give_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = _Dying(1)
    assert await asyncio.wait_for(sup.run(), 60) == 1
    assert max(s.starts for s in sup.slots) == MAX_START_FAILURES  # backoff, then give up
    assert "server process died; restarting" in caplog.text
    assert "keeps dying before it serves; giving up" in caplog.text


LISTEN = 10


def test_http_edge_in_every_process_and_the_inline_worker_in_the_first_only(
    redis_srv: RedisProcess,
) -> None:
    srv = ServerProcess(
        {
            "CONSENT_REDIS_URL": redis_srv.url,
            "CONSENT_DELIVERY": "inline",
            "CONSENT_PROCESSES": "2",
        },
        http=True,
    ).start()
    try:
        assert srv.proc is not None
        pids = children(srv.proc.pid)
        http_port = int(srv.http_url.rsplit(":", 1)[1])
        owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
        listening = {
            owner[inode]
            for local, state, _, inode in _tcp_rows()
            if local == http_port and state == LISTEN and inode in owner
        }
        assert listening == set(pids)
        for _ in range(4):
            with urllib.request.urlopen(srv.http_url + "/healthz", timeout=10) as reply:
                assert reply.status == 200
        # CONSENT_DELIVERY_CONCURRENCY keeps its meaning: one inline worker, not N. Each
        # process starts its worker (if any) before its HTTP edge.
        deadline = time.monotonic() + 20
        while srv.log().count('"http edge serving"') < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.log().count('"http edge serving"') == 2
        assert srv.log().count('"delivery worker started"') == 1
    finally:
        srv.stop()


def test_processes_drain_and_exit_when_the_supervisor_is_killed(
    redis_srv: RedisProcess,
) -> None:
    srv = supervised(redis_srv)
    assert srv.proc is not None
    pids = children(srv.proc.pid)
    srv.kill()  # SIGKILL: the supervisor cannot forward anything
    deadline = time.monotonic() + 20
    drained = False
    while not drained and time.monotonic() < deadline:
        drained = not alive(pids) and srv.log().count("shutting down: draining") == 2
        time.sleep(0.05)
    assert drained, srv.log()  # each got SIGTERM from the kernel, drained and exited
