"""Delivery benchmark: end-to-end delivery throughput beside the accept rate of the same run.

Starts a private redis-server and the real server process (inline delivery worker, the
`log` provider), drives SendIfAllowed over gRPC from concurrent clients for
``duration_s``, samples the outbox lag (age of the oldest message still waiting) while
the load runs, then waits until every accepted message is DELIVERED. Rows:

- SendIfAllowed accept rate (msg/s) — the baseline measured in the same run;
- delivery throughput (msg/s): delivered messages over the time from the first
  acceptance to the last DELIVERED;
- delivery latency p50/p99 (acceptance -> DELIVERED) and outbox lag p50/max under load;
- drain rate (msg/s): how fast the worker empties a backlog queued before it started,
  i.e. delivery capacity when it is not waiting for new sends.

``python bench/delivery.py [seconds]`` prints the table; ``measure`` is what the
``make bench`` runner calls.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/delivery.py` from a checkout
    sys.path.insert(0, str(ROOT))

from consent_client.v1 import consent_pb2 as pb  # noqa: E402
from consent_client.v1 import consent_pb2_grpc  # noqa: E402
from consent_server.domain.model import (  # noqa: E402
    Channel,
    OutboundMessage,
    Policy,
    Recipient,
    SendInput,
)
from consent_server.store import keys  # noqa: E402
from consent_server.store.outbox import DeliveryRepository  # noqa: E402
from consent_server.store.repository import RedisConsentStore  # noqa: E402

CLIENTS = 16
BACKLOG = 2000
TENANT = "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(workdir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def _start_server(redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "CONSENT_REDIS_URL": redis_url,
        "CONSENT_DELIVERY": "inline",
        "CONSENT_LOG_LEVEL": "info",  # the log provider writes its line per message
        "CONSENT_LISTEN": f"127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "consent_server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"127.0.0.1:{port}"


async def _wait_serving(target: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    async with grpc.aio.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not become SERVING")


async def _wait_redis(port: int, within_s: float = 10) -> None:
    client = aioredis.Redis(port=port)
    deadline = time.monotonic() + within_s
    try:
        while time.monotonic() < deadline:
            try:
                await client.ping()
                return
            except (OSError, aioredis.ConnectionError):
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise RuntimeError("redis-server did not start")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(target: str, duration_s: float, ids: list[str]) -> float:
    """Senders for ``duration_s``; returns the elapsed seconds."""
    async with grpc.aio.insecure_channel(target) as ch:
        stub = consent_pb2_grpc.ConsentServiceStub(ch)
        stop_at = time.monotonic() + duration_s

        async def sender(n: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                resp = await stub.SendIfAllowed(
                    pb.SendIfAllowedRequest(
                        tenant_id=TENANT,
                        recipient=pb.Recipient(
                            channel=pb.CHANNEL_SMS, address=f"+1415555{(n * 997 + i) % 10000:04d}"
                        ),
                        topic="order_updates",
                        message=pb.Message(text=f"Your order {n}-{i} shipped"),
                    ),
                    timeout=10,
                )
                ids.append(resp.message_id)
                i += 1

        started = time.monotonic()
        await asyncio.gather(*(sender(n) for n in range(CLIENTS)))
        return time.monotonic() - started


async def _sample_lag(outbox: DeliveryRepository, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        _total, oldest = await outbox.backlog()
        out.append(max(0.0, time.time() * 1000 - oldest) if oldest else 0.0)
        await asyncio.sleep(0.1)


async def _prefill(client: aioredis.Redis, count: int) -> None:
    """Queue ``count`` messages through the real send script, before any worker runs."""
    store = RedisConsentStore(client)
    for start in range(0, count, 50):
        await asyncio.gather(
            *(
                store.send(
                    SendInput(
                        tenant_id=TENANT,
                        recipient=Recipient(Channel.SMS, f"+1415556{i:04d}"),
                        topic="order_updates",
                        message=OutboundMessage(kind="text", text=f"backlog {i}"),
                        idempotency_key="",
                        not_after_ms=0,
                    ),
                    Policy.ALLOW_UNLESS_OPTED_OUT,
                )
                for i in range(start, min(start + 50, count))
            )
        )


async def _drain(outbox: DeliveryRepository, limit_s: float) -> float:
    """Wait until nothing waits in the outboxes (or ``limit_s``); returns the delivery
    rate observed from the first message leaving to the last (0 when nothing moved)."""
    started = time.monotonic()
    first: tuple[float, int] | None = None
    initial, _ = await outbox.backlog()
    while time.monotonic() - started < limit_s:
        total, _ = await outbox.backlog()
        now = time.monotonic()
        if first is None and total < initial:
            first = (now, total)
        if total == 0:
            if first is None or now <= first[0]:
                return 0.0
            return first[1] / (now - first[0])
        await asyncio.sleep(0.02)
    return 0.0


async def measure(duration_s: float) -> list[tuple[str, float, str]]:
    """Run the benchmark for ``duration_s`` of load; rows of (name, value, unit)."""
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        redis_proc, redis_port = _start_redis(Path(tmp))
        server: subprocess.Popen[bytes] | None = None
        client = aioredis.Redis(port=redis_port)
        try:
            await _wait_redis(redis_port)
            outbox = DeliveryRepository(client)
            await _prefill(client, BACKLOG)
            server, target = _start_server(f"redis://127.0.0.1:{redis_port}/0")
            drain_rate = await _drain(outbox, 120.0)
            await _wait_serving(target)
            ids: list[str] = []
            lags: list[float] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample_lag(outbox, stop, lags))
            elapsed = await _load(target, duration_s, ids)
            stop.set()
            await sampler
            await _drain(outbox, max(60.0, duration_s * 10))
            pipe = client.pipeline(transaction=False)
            for mid in ids:
                part = keys.message_partition(mid)
                assert part is not None
                pipe.hmget(keys.message(TENANT, part, mid), ["st", "at", "up"])
            rows = await pipe.execute()
        finally:
            await client.aclose()
            if server is not None:
                server.terminate()
                server.wait(30)
            redis_proc.terminate()
            redis_proc.wait(10)
    delivered = [(int(at), int(up)) for st, at, up in rows if st == b"delivered"]
    accept_rate = len(ids) / elapsed if elapsed else 0.0
    latencies = [float(up - at) for at, up in delivered]
    span_s = (
        (max(up for _, up in delivered) - min(at for at, _ in delivered)) / 1000
        if delivered
        else 0.0
    )
    return [
        ("SendIfAllowed accept rate (baseline, same run)", round(accept_rate, 1), "msg/s"),
        (
            "delivery throughput, accept -> DELIVERED (log provider)",
            round(len(delivered) / span_s, 1) if span_s else 0.0,
            "msg/s",
        ),
        ("messages delivered / accepted", round(len(delivered) / max(len(ids), 1) * 100, 2), "%"),
        ("delivery latency p50", _pct(latencies, 0.5), "ms"),
        ("delivery latency p99", _pct(latencies, 0.99), "ms"),
        ("outbox lag p50 under load", round(statistics.median(lags), 1) if lags else 0.0, "ms"),
        ("outbox lag max under load", round(max(lags), 1) if lags else 0.0, "ms"),
        (
            f"drain rate of a {BACKLOG}-message backlog (capacity)",
            round(drain_rate, 1),
            "msg/s",
        ),
    ]


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    results = asyncio.run(measure(seconds))
    width = max(len(name) for name, _, _ in results)
    print(f"{'delivery benchmark':<{width}}  {'value':>10}  unit")
    for name, value, unit in results:
        print(f"{name:<{width}}  {value:>10g}  {unit}")
