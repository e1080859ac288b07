"""The outbox worker: reads every partition's outbox in one consumer group, re-checks
consent and claims each message atomically, hands it to the tenant's provider, and
records the outcome (docs/outbox.md).

Any number of workers (inline in servers, or ``python -m consent_server.worker``) share
the group: each entry goes to one of them. An entry stays pending in the group while its
worker handles it; a worker that dies leaves it pending, and another takes it over after
the visibility timeout (XAUTOCLAIM). The provider call carries the message id as its
idempotency key, so such a takeover does not send twice where the provider honours it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from consent_server import metrics as m
from consent_server.domain.delivery import ProviderConfig, ProviderConfigStore, provider_for
from consent_server.domain.egress import EgressPolicy
from consent_server.domain.errors import StoreUnavailable
from consent_server.domain.feedback import FeedbackPath, ProviderFeedback, ProviderOptOut
from consent_server.domain.masking import mask_address
from consent_server.domain.outbox import OutboxEntry
from consent_server.domain.ports import ConsentStore, DeliveryOutbox
from consent_server.egress import guarded_client

from .backoff import RetryTuning
from .feedback import provider_feedback
from .providers import (
    Delivered,
    DeliveryMessage,
    OptedOut,
    PermanentFailure,
    Provider,
    ProviderResult,
    TransientFailure,
    build_provider,
)

log = logging.getLogger("consent_server.delivery")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def default_consumer_name() -> str:
    """A consumer name unique to this process (host, pid and a random suffix)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class WorkerOptions(RetryTuning):
    """Tuning; the defaults suit production, tests shrink the timeouts."""

    concurrency: int = 32
    batch: int = 64
    block_ms: int = 1000  # > 0: Redis reads BLOCK 0 as "forever"
    idle_poll_s: float = 0.05
    visibility_timeout_s: float = 60.0
    provider_cache_s: float = 1.0
    backlog_interval_s: float = 5.0
    consumer: str = field(default_factory=default_consumer_name)

    @property
    def tick_s(self) -> float:
        """How often due retries are re-queued and abandoned entries reclaimed."""
        return max(0.05, min(self.visibility_timeout_s / 4, self.backoff_base_ms / 2000, 1.0))


class Companion(Protocol):
    """Background work of the delivery role started and stopped with the worker (the
    change webhook dispatcher)."""

    async def start(self) -> None:
        """Start in the background."""
        ...

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop, finishing in-flight work for up to ``grace_s``."""
        ...


class DeliveryWorker:
    """One consumer of the outbox group; ``start``/``stop`` run it as background tasks."""

    def __init__(
        self,
        consent: ConsentStore,
        outbox: DeliveryOutbox,
        options: WorkerOptions | None = None,
        *,
        providers: ProviderConfigStore,
        feedback: ProviderFeedback | None = None,
        egress: EgressPolicy | None = None,
        companions: Sequence[Companion] = (),
    ) -> None:
        self._companions = tuple(companions)
        self._consent = consent
        self._outbox = outbox
        self._provider_settings = providers
        self._feedback = feedback or provider_feedback(consent)
        self.options = options or WorkerOptions()
        # Providers reach tenant-chosen URLs: only through the egress guard (public
        # addresses, plus what the operator allowed), never a plain client.
        self._http: httpx.AsyncClient = guarded_client(egress or EgressPolicy())
        self._sem = asyncio.Semaphore(self.options.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._handling: dict[tuple[int, str], OutboxEntry] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._providers: dict[str, tuple[float, dict[str, ProviderConfig]]] = {}
        self._stopping = False
        self._store_down = False
        self._groups_ready = asyncio.Event()

    @property
    def consumer(self) -> str:
        """This worker's consumer name in the group."""
        return self.options.consumer

    async def start(self) -> None:
        """Start delivering in the background: the consumer groups are created first,
        and while the store is unreachable the worker waits for it, so a server started
        before Redis still starts (NOT_SERVING) and delivers once Redis answers."""
        self._loops = [
            asyncio.create_task(self._read_loop(), name="delivery-read"),
            asyncio.create_task(self._maintenance_loop(), name="delivery-maintenance"),
        ]
        for companion in self._companions:
            await companion.start()
        log.info(
            "delivery worker started",
            extra={"consumer": self.consumer, "concurrency": self.options.concurrency},
        )

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop reading, let in-flight deliveries finish for up to ``grace_s``, then cancel
        the rest (their entries stay pending and another worker reclaims them)."""
        self._stopping = True
        for companion in self._companions:
            await companion.stop(grace_s)
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._http.aclose()
        with contextlib.suppress(StoreUnavailable):  # the name stays in the group; harmless
            await self._outbox.retire(self.consumer)
        log.info("delivery worker stopped", extra={"consumer": self.consumer})

    async def run_once(self) -> int:
        """Tests and tools: re-queue due retries, reclaim abandoned entries, read what is
        there now, and deliver it all before returning how many entries were handled."""
        await self._outbox.ensure_groups()
        await self._outbox.requeue_due(_now_ms())
        entries = await self._outbox.reclaim(
            self.consumer, int(self.options.visibility_timeout_s * 1000), self.options.batch
        )
        entries += await self._outbox.read(self.consumer, self.options.batch, None)
        await asyncio.gather(*(self.handle(e) for e in entries))
        return len(entries)

    # -- loops -------------------------------------------------------------------------

    def _spawn(self, entry: OutboxEntry) -> None:
        ident = (entry.partition, entry.entry_id)
        if ident in self._handling:
            return  # reclaimed from ourselves: already being handled here
        self._handling[ident] = entry
        task = asyncio.create_task(self._guarded(entry))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        task.add_done_callback(lambda _t: self._handling.pop(ident, None))

    async def _guarded(self, entry: OutboxEntry) -> None:
        async with self._sem:
            await self.handle(entry)

    async def _ensure_groups(self) -> None:
        while not self._stopping:
            try:
                await self._outbox.ensure_groups()
                self._store_ok()
                self._groups_ready.set()
                return
            except Exception as exc:  # whatever it is, try again: never stop delivering
                self._store_failed(exc)
                await asyncio.sleep(1.0)

    async def _read_loop(self) -> None:
        opts = self.options
        await self._ensure_groups()
        while not self._stopping:
            free = opts.concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            started = time.monotonic()
            try:
                entries = await self._outbox.read(
                    self.consumer, min(opts.batch, free), opts.block_ms
                )
                self._store_ok()
            except StoreUnavailable as exc:
                self._store_failed(exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:  # never let one odd reply end delivery for this process
                log.exception("delivery: reading the outbox failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for entry in entries:
                self._spawn(entry)
            # The embedded store answers a blocking read at once: do not spin.
            if not entries and time.monotonic() - started < opts.block_ms / 2000:
                await asyncio.sleep(opts.idle_poll_s)

    async def _maintenance_loop(self) -> None:
        opts = self.options
        last_backlog = 0.0
        await self._groups_ready.wait()
        while not self._stopping:
            try:
                await self._outbox.requeue_due(_now_ms())
                if self._handling:
                    await self._outbox.touch(self.consumer, list(self._handling.values()))
                free = opts.concurrency - len(self._inflight)
                if free > 0:
                    for entry in await self._outbox.reclaim(
                        self.consumer, int(opts.visibility_timeout_s * 1000), min(free, opts.batch)
                    ):
                        log.info(
                            "reclaimed an abandoned message",
                            extra={"message_id": entry.message_id, "consumer": self.consumer},
                        )
                        self._spawn(entry)
                if time.monotonic() - last_backlog >= opts.backlog_interval_s:
                    last_backlog = time.monotonic()
                    total, oldest = await self._outbox.backlog()
                    m.OUTBOX_BACKLOG.set(total)
                    m.OUTBOX_OLDEST.set(max(0, _now_ms() - oldest) / 1000 if oldest else 0)
                self._store_ok()
            except StoreUnavailable as exc:
                self._store_failed(exc)
            except Exception:  # keep reclaiming and retrying whatever one tick hit
                log.exception("delivery: outbox maintenance failed; retrying")
            await asyncio.sleep(opts.tick_s)

    def _store_ok(self) -> None:
        if self._store_down:
            log.info("delivery: store reachable again")
            self._store_down = False

    def _store_failed(self, exc: Exception) -> None:
        if not self._store_down:
            log.error("delivery paused: store unreachable", extra={"error": str(exc)})
            self._store_down = True

    # -- one entry ---------------------------------------------------------------------

    async def handle(self, entry: OutboxEntry) -> None:
        """Claim, deliver and record one entry. Errors leave it pending for a reclaim."""
        try:
            await self._handle(entry)
        except StoreUnavailable as exc:
            self._store_failed(exc)
        except Exception:
            log.exception("delivery failed unexpectedly", extra={"message_id": entry.message_id})

    async def _handle(self, entry: OutboxEntry) -> None:
        if not entry.valid:
            log.warning("dropping a malformed outbox entry", extra={"entry": entry.entry_id})
            await self._outbox.drop(entry)
            return
        rcpt = entry.recipient
        assert rcpt is not None
        settings = await self._consent.tenant_settings(entry.tenant_id)
        claim = await self._outbox.claim(entry, settings.policy_for(entry.topic))
        ctx = {
            "message_id": entry.message_id,
            "tenant": entry.tenant_id,
            "to": mask_address(rcpt.address),
            "topic": entry.topic,
        }
        if claim.kind == "cancelled":
            m.CANCELLED.inc()
            log.info("delivery cancelled: consent withdrawn", extra={**ctx, "reason": claim.reason})
            return
        if claim.kind == "expired":
            m.EXPIRED.inc()
            log.info("delivery expired: not_after passed", extra=ctx)
            return
        if claim.kind != "go":
            return  # already final (another worker finished it) or long gone
        if claim.attempts == 1:
            m.OUTBOX_WAIT.observe(max(0, _now_ms() - entry.accepted_at_ms) / 1000)
        provider = await self._provider(entry)
        if claim.attempts > self.options.max_attempts:
            # Reached only when earlier attempts crashed before recording an outcome.
            await self._fail(entry, provider, f"gave up after {claim.attempts - 1} attempts")
            return
        try:
            message = DeliveryMessage(
                message_id=entry.message_id,
                tenant_id=entry.tenant_id,
                channel=rcpt.channel.value,
                address=rcpt.address,
                topic=entry.topic,
                purpose=entry.purpose,
                body=json.loads(entry.fields.get("body") or "{}"),
                metadata=json.loads(entry.fields.get("meta") or "{}"),
                accepted_at_ms=entry.accepted_at_ms,
                attempt=claim.attempts,
            )
        except ValueError:
            await self._fail(entry, provider, "the stored message body is not valid JSON")
            return
        started = time.monotonic()
        result = await provider.send(message)
        m.PROVIDER_CALL.labels(provider.name).observe(time.monotonic() - started)
        await self._record(entry, provider, result, claim.attempts, ctx)

    async def _record(
        self,
        entry: OutboxEntry,
        provider: Provider,
        result: ProviderResult,
        attempts: int,
        ctx: dict[str, str],
    ) -> None:
        if isinstance(result, Delivered):
            outcome = await self._outbox.finish(
                entry,
                # Status honesty: the log provider sends nothing, so the status says so.
                "logged" if result.logged_only else "delivered",
                provider_message_id=result.provider_message_id,
                provider=provider.name,
            )
            if outcome == "done":
                m.DELIVERED.labels(provider.name, entry.purpose).inc()
                m.DELIVERY_LATENCY.observe(max(0, _now_ms() - entry.accepted_at_ms) / 1000)
                log.debug("delivered", extra={**ctx, "provider": provider.name})
        elif isinstance(result, OptedOut):
            await self._record_provider_opt_out(entry, provider, result)
            await self._fail(entry, provider, f"RECIPIENT_OPTED_OUT (provider): {result.error}")
        elif isinstance(result, PermanentFailure):
            await self._fail(entry, provider, result.error)
        else:
            await self._retry_or_give_up(entry, provider, result, attempts, ctx)

    async def _retry_or_give_up(
        self,
        entry: OutboxEntry,
        provider: Provider,
        result: TransientFailure,
        attempts: int,
        ctx: dict[str, str],
    ) -> None:
        opts = self.options
        if attempts >= opts.max_attempts:
            await self._fail(entry, provider, f"gave up after {attempts} attempts: {result.error}")
            return
        due = _now_ms() + opts.retry_wait_ms(attempts)
        if entry.not_after_ms and due >= entry.not_after_ms:
            if (
                await self._outbox.finish(
                    entry,
                    "expired",
                    error=f"not_after passes before the next retry: {result.error}",
                )
                == "done"
            ):
                m.EXPIRED.inc()
            return
        if (
            await self._outbox.finish(
                entry, "retry", error=result.error, provider=provider.name, retry_due_ms=due
            )
            == "retry"
        ):
            m.RETRIES.labels(provider.name).inc()
            log.info(
                "delivery will be retried",
                extra={**ctx, "attempt": attempts, "error": result.error, "due_ms": due},
            )

    async def _fail(self, entry: OutboxEntry, provider: Provider, error: str) -> None:
        if (
            await self._outbox.finish(entry, "failed", error=error, provider=provider.name)
            == "done"
        ):
            m.FAILED.labels(provider.name).inc()
            log.warning(
                "delivery failed",
                extra={"message_id": entry.message_id, "tenant": entry.tenant_id, "error": error},
            )

    async def _record_provider_opt_out(
        self, entry: OutboxEntry, provider: Provider, result: OptedOut
    ) -> None:
        """The provider's "opted out / blocked" becomes an opt-out (provider feedback)."""
        await self._feedback.opted_out(
            ProviderOptOut(
                tenant_id=entry.tenant_id,
                message_id=entry.message_id,
                provider=provider.name,
                topic=result.topic,
                detail=result.error,
                path=FeedbackPath.ANSWER,
                recipient=entry.recipient,
            )
        )

    async def _provider(self, entry: OutboxEntry) -> Provider:
        rcpt = entry.recipient
        assert rcpt is not None
        now = time.monotonic()
        cached = self._providers.get(entry.tenant_id)
        if cached is None or now - cached[0] >= self.options.provider_cache_s:
            cached = (now, await self._provider_settings.providers(entry.tenant_id))
            if len(self._providers) > 10_000:
                self._providers.clear()
            self._providers[entry.tenant_id] = cached
        return build_provider(provider_for(cached[1], rcpt.channel), self._http)
