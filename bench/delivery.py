"""The delivery scenario: end-to-end delivery throughput beside the accept rate of the same run.

It needs a server whose inline worker delivers (the shared one runs with delivery off so
that the API rows measure the API) and an outbox nobody else filled, so each call starts
its own private redis-server and consent server (``CONSENT_DELIVERY=inline``, the default
``log`` provider, logging at ``info`` so each delivery writes its line as in production)
with ``bench.procs``, and stops both before returning. Then:

1. **drain**: a backlog queued through the real send script before the server starts
   (``250 x --duration`` messages, 1,000 by default, to distinct recipients over every
   partition) is delivered with no sends competing: delivery capacity.
2. **load**: ``ctx.load`` drives SendIfAllowed (the same request, generator and concurrency
   as the ``send_if_allowed`` row) while the worker delivers in the same process; the
   outbox lag (age of the oldest waiting message) is sampled every 100 ms meanwhile.
3. **catch up**: wait until nothing waits, then read every message's status hash:
   acceptance time ``at``, last update ``up`` (the DELIVERED time) and state ``st``.

Rows (keys): ``delivery_accept`` SendIfAllowed accepted with the worker on, the baseline
measured in the same run; ``delivered`` the messages accepted in the measured window over
the time from the first of them accepted to the last of them DELIVERED, with acceptance ->
DELIVERED latencies; ``outbox_lag``; ``drain``.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import redis
import redis.asyncio as aioredis

from bench import procs, workload
from bench.context import BenchContext
from bench.load import percentile
from bench.measuring import measure, row
from bench.model import LoadResult, Row
from consent_server.domain.model import Channel, OutboundMessage, Policy, Recipient, SendInput
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.repository import RedisConsentStore
from consent_server.store.schema import check_schema

# Final states of a message handed to its provider; the log provider's is "logged".
HANDED_OFF = frozenset({"delivered", "logged"})

# Backlog messages per second of --duration: 1,000 at the default 4 s, about two seconds of
# the worker's capacity, so the drain rate is not dominated by its first and last message.
BACKLOG_PER_S = 250
LAG_SAMPLE_S = 0.1


def _now_ms() -> float:
    # The message hashes carry redis-server's TIME in ms; the bench runs on the same host.
    return time.time() * 1000


async def _prefill(url: str, count: int) -> None:
    """Queue ``count`` messages through the real send script, before any worker runs."""
    client = aioredis.Redis.from_url(url)
    # Creates the store as a server would (its layout recorded), so the server started
    # afterwards finds these messages under the same keys.
    await check_schema(client)
    store = RedisConsentStore(client)
    try:
        for start in range(0, count, 50):
            await asyncio.gather(
                *(
                    store.send(
                        SendInput(
                            tenant_id=workload.TENANT,
                            recipient=Recipient(Channel.SMS, workload.phone(20_000 + i)),
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
    finally:
        await client.aclose()


async def _wait_drained(url: str, limit_s: float) -> None:
    """Poll the outboxes and retry queues until empty, or until ``limit_s`` has passed."""
    client = aioredis.Redis.from_url(url)
    await check_schema(client)  # the layout the server recorded: its outboxes
    outbox = DeliveryRepository(client)
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            total, _ = await outbox.backlog()
            if total == 0:
                return
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def _sample_lag(url: str, stop: threading.Event, out: list[float]) -> None:
    """Every LAG_SAMPLE_S until ``stop``: the age of the oldest waiting message (0 if none)."""
    client = aioredis.Redis.from_url(url)
    await check_schema(client)  # the layout the server recorded: its outboxes
    outbox = DeliveryRepository(client)
    try:
        while not stop.is_set():
            _total, oldest = await outbox.backlog()
            out.append(max(0.0, _now_ms() - oldest) if oldest else 0.0)
            await asyncio.sleep(LAG_SAMPLE_S)
    finally:
        await client.aclose()


@dataclass(frozen=True, slots=True)
class _Message:
    state: str
    accepted_ms: int
    updated_ms: int


def _messages(client: redis.Redis) -> list[_Message]:
    """Every message status hash of the bench tenant (the private Redis holds only ours)."""
    # Any partition tag: the server's layout, not this process's, names them.
    names = list(client.scan_iter(match=f"ca:{{cp*}}:{workload.TENANT}:m:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hmget(name, ["st", "at", "up"])
    out = []
    for st, at, up in pipe.execute():
        if st is not None and at is not None and up is not None:
            out.append(_Message(st.decode(), int(at), int(up)))
    return out


def delivery(ctx: BenchContext) -> list[Row]:
    """Drain a backlog, then SendIfAllowed under load with the inline worker delivering."""
    backlog = max(100, round(BACKLOG_PER_S * ctx.options.duration_s))
    # Generous: a loaded machine may drain slowly; a message still waiting shows as failed.
    drain_limit_s = max(60.0, 20 * ctx.options.duration_s)
    workdir = Path(tempfile.mkdtemp(prefix="delivery-", dir=ctx.workdir))
    store = procs.RedisServer(workdir / "redis").start()
    server: procs.GrpcProcess | None = None
    client = store.client()
    lags: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(
        target=lambda: asyncio.run(_sample_lag(store.url, stop, lags)), daemon=True
    )
    window_start: list[float] = []
    try:
        asyncio.run(_prefill(store.url, backlog))
        queued_until = _now_ms()
        server = procs.consent_server(store.url, delivery="inline").start()
        asyncio.run(_wait_drained(store.url, drain_limit_s))
        request = workload.send_request()
        workload.probe(server.target, workload.SEND, request)

        def started() -> None:
            window_start.append(_now_ms())
            sampler.start()

        r = measure(ctx, server, workload.SEND, request, on_measure_start=started)
        stop.set()
        if sampler.is_alive():
            sampler.join(10)
        # Whatever is still undelivered at the limit counts as failed in the rows.
        asyncio.run(_wait_drained(store.url, drain_limit_s))
        messages = _messages(client)
    finally:
        stop.set()
        client.close()
        if server is not None:
            server.stop()
        store.stop()
    return _rows(ctx, r, messages, queued_until, window_start[0], lags, backlog)


def _rows(
    ctx: BenchContext,
    r: LoadResult,
    messages: list[_Message],
    queued_until: float,
    window_start: float,
    lags: list[float],
    backlog: int,
) -> list[Row]:
    """The four rows from the load result and the messages' status hashes."""
    # Sent during the measured load (warm-up ran before ``window_start``, the backlog and
    # the probe before that), and among them those that reached DELIVERED.
    sent = [m for m in messages if m.accepted_ms >= window_start]
    delivered = [m for m in sent if m.state in HANDED_OFF]
    if not ctx.load.sees_grpc_status:
        # As in send_if_allowed: count successes where they land, one message per accept.
        answered = r.ok + r.failed
        r = replace(r, ok=min(len(sent), answered), failed=max(0, answered - len(sent)))
    accept = row(
        "delivery_accept",
        "SendIfAllowed (accepted), inline delivery on",
        r,
        unit="msg/s",
        note="baseline of the next row, same run; CPU includes the worker's",
    )
    latencies = sorted(float(m.updated_ms - m.accepted_ms) for m in delivered)
    span_s = (
        (max(m.updated_ms for m in delivered) - min(m.accepted_ms for m in sent)) / 1000
        if delivered
        else 0.0
    )
    end_to_end = Row(
        "delivered",
        "delivered, accept -> DELIVERED (log provider)",
        len(delivered) / span_s if span_s > 0 else 0.0,
        "msg/s",
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        len(sent) - len(delivered),
        "the above row's messages, first accepted to last DELIVERED; p50/p99: each's latency",
    )
    lag = sorted(lags)
    outbox_lag = Row(
        "outbox_lag",
        "outbox lag under that load",
        None,
        "ms",
        percentile(lag, 0.50),
        percentile(lag, 0.99),
        note=f"age of the oldest waiting message, sampled every {LAG_SAMPLE_S * 1000:.0f} ms",
    )
    queued = [m for m in messages if m.accepted_ms <= queued_until]
    drained = sorted(m.updated_ms for m in queued if m.state in HANDED_OFF)
    drain_s = (drained[-1] - drained[0]) / 1000 if len(drained) > 1 else 0.0
    drain = Row(
        "drain",
        f"delivery drain of {backlog:,} queued (capacity)",
        (len(drained) - 1) / drain_s if drain_s > 0 else 0.0,
        "msg/s",
        failed=len(queued) - len(drained),
        note="first to last DELIVERED, no sends competing",
    )
    return [accept, end_to_end, outbox_lag, drain]
