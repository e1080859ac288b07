"""The change webhook dispatcher: every change of a tenant's feed, POSTed to each of
its endpoints, signed, in order per partition, from a stored cursor (docs/webhooks.md).

It runs beside the outbox worker (inline in a server, or in ``python -m
consent_server.worker``). For each endpoint it takes a lease (one dispatcher per
endpoint, whatever the number of worker processes), reads the feed after the
endpoint's cursor, and delivers the entries of each partition one after the other:
the cursor of a partition advances only once its entry is finished (delivered, or
given up into the dead letters), so a restart resumes where it stopped and repeats
at most the entry in flight (at least once; receivers deduplicate by the event id).

A change that fails is retried with the outbox's backoff (``backoff.RetryTuning``) up
to ``max_attempts``; then it goes to the endpoint's dead letters and the partition
moves on: one poisoned change or a long outage must not stall every later change
(the dead letters say what to re-send). A 4xx answer other than 408/425/429, a
redirect (never followed) and a destination the egress guard refuses are permanent:
dead-lettered at once. Every connection goes through the egress guard, so a name
that resolves to an internal address is refused at connect time (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from consent_server import metrics as m
from consent_server.domain.change_webhooks import (
    ChangeWebhook,
    ChangeWebhookStore,
    DeliveryRecord,
    change_payload,
    split_event_id,
)
from consent_server.domain.egress import EgressPolicy
from consent_server.domain.feed import FeedEntry, FeedTrimmed, feed_event_id
from consent_server.domain.ports import ChangeFeedStore
from consent_server.egress import EgressRefused, Resolver, guarded_client, system_resolve

from .backoff import RetryTuning
from .providers.webhook import RETRY_STATUS, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from .worker import default_consumer_name

log = logging.getLogger("consent_server.delivery.change_webhooks")

EVENT_ID_HEADER = "X-Consent-Event-Id"
WEBHOOK_HEADER = "X-Consent-Webhook"
_MAX_SEQ = "9" * 16
_NOWHERE = "9" * 16 + "-0"  # a position after every entry: reads nothing


@dataclass(frozen=True, slots=True)
class DispatchOptions(RetryTuning):
    """Tuning; the retries default to the outbox worker's, tests shrink them."""

    poll_s: float = 0.5
    read_count: int = 100
    timeout_s: float = 10.0
    lease_ms: int = 60_000
    owner: str = field(default_factory=default_consumer_name)


@dataclass(frozen=True, slots=True)
class _Attempt:
    ok: bool
    permanent: bool
    error: str
    status: int
    latency_ms: int


class ChangeWebhookDispatcher:
    """Delivers every endpoint's changes; ``start``/``stop`` run it in the background,
    ``run_once`` is one pass over every endpoint (tests)."""

    def __init__(
        self,
        hooks: ChangeWebhookStore,
        feed: ChangeFeedStore,
        options: DispatchOptions | None = None,
        *,
        egress: EgressPolicy | None = None,
        resolve: Resolver = system_resolve,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._hooks = hooks
        self._feed = feed
        self.options = options or DispatchOptions()
        self._http = guarded_client(
            egress or EgressPolicy(), timeout_s=self.options.timeout_s, resolve=resolve
        )
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._running: dict[tuple[str, str], asyncio.Task[int]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._held: set[tuple[str, str]] = set()

    async def start(self) -> None:
        """Dispatch in the background until ``stop``."""
        self._stop.clear()
        self._loop = asyncio.create_task(self._main(), name="change-webhooks")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop: endpoints finish the change in hand for up to ``grace_s`` (a retry wait
        ends at once); what is cancelled is delivered again after a restart."""
        self._stop.set()
        tasks = [t for t in (self._loop, *self._running.values()) if t is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for tenant_id, name in sorted(self._held):  # the next dispatcher starts at once
            with contextlib.suppress(Exception):
                await self._hooks.lease(tenant_id, name, self.options.owner, 0)
        self._held.clear()
        await self._http.aclose()

    async def _main(self) -> None:
        while not self._stop.is_set():
            try:
                for key in await self._hooks.all_endpoints():
                    task = self._running.get(key)
                    if task is None or task.done():
                        self._running[key] = asyncio.create_task(
                            self._guarded(*key), name=f"change-webhook-{key[0]}/{key[1]}"
                        )
            except Exception as exc:  # store down: try again on the next tick
                log.warning("change webhooks: cannot list endpoints", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.options.poll_s)

    async def _guarded(self, tenant_id: str, name: str) -> int:
        try:
            return await self.drain(tenant_id, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "change webhook pass failed",
                extra={"tenant_id": tenant_id, "webhook": name, "error": str(exc)},
            )
            return 0

    async def run_once(self) -> int:
        """One pass over every endpoint: how many changes were finished."""
        counts = await asyncio.gather(
            *(self.drain(t, n) for t, n in await self._hooks.all_endpoints())
        )
        return sum(counts)

    async def drain(self, tenant_id: str, name: str) -> int:
        """Deliver what the feed holds after the endpoint's cursor (up to ``read_count``
        entries per partition); how many changes were finished."""
        opts = self.options
        if not await self._hooks.lease(tenant_id, name, opts.owner, opts.lease_ms):
            return 0  # another dispatcher holds this endpoint
        self._held.add((tenant_id, name))
        hook = await self._hooks.get(tenant_id, name)
        if hook is None:
            return 0
        redriven = await self._redrive(hook)
        positions = await self._hooks.cursor(tenant_id, name)
        try:
            batches = await self._feed.read(tenant_id, positions, opts.read_count)
        except FeedTrimmed:
            await self._skip_trimmed(hook, positions)
            return 0
        done = await asyncio.gather(*(self._partition(hook, p, es) for p, es in batches))
        return redriven + sum(done)

    async def _redrive(self, hook: ChangeWebhook) -> int:
        """Send the dead letters queued by RedriveChangeWebhookDeadLetter again."""
        done = 0
        for event_id in await self._hooks.redrives(hook.tenant_id, hook.name):
            where = split_event_id(event_id, self._feed.partitions)
            entry = await self._entry(hook.tenant_id, *where) if where else None
            if where is None or entry is None:
                item = DeliveryRecord(
                    event_id,
                    "dead_letter",
                    0,
                    "redrive: the change is no longer in the feed (trimmed, or its "
                    "recipient erased)",
                    0,
                    0,
                    self._clock_ms(),
                )
            else:
                _current, got = await self._deliver(hook, where[0], entry)
                if got is None:
                    return done  # stopping, deleted or taken over: stays queued
                item = got
            await self._hooks.record(hook.tenant_id, hook.name, item)
            await self._hooks.redriven(hook.tenant_id, hook.name, event_id)
            done += 1
        return done

    async def _entry(self, tenant_id: str, part: int, entry_id: str) -> FeedEntry | None:
        """One feed entry by id, or None when it is gone."""
        ms_text, seq_text = entry_id.split("-")
        ms, seq = int(ms_text), int(seq_text)
        before = f"{ms}-{seq - 1}" if seq > 0 else f"{max(ms - 1, 0)}-{_MAX_SEQ}"
        positions = [_NOWHERE] * self._feed.partitions
        positions[part] = before
        try:
            batches = await self._feed.read(tenant_id, positions, 1)
        except FeedTrimmed:
            return None
        for p, entries in batches:
            if p == part and entries and entries[0].entry_id == entry_id:
                return entries[0]
        return None

    async def _skip_trimmed(self, hook: ChangeWebhook, positions: list[str]) -> None:
        """The endpoint fell behind the feed's retention: what was trimmed is lost to
        it. Record that in its dead letters (re-export to recover) and go on from the
        oldest retained entry."""
        oldest = await self._feed.oldest(hook.tenant_id)
        for part in await self._feed.trimmed_parts(hook.tenant_id, positions):
            await self._hooks.record(
                hook.tenant_id,
                hook.name,
                DeliveryRecord(
                    feed_event_id(part, oldest[part], self._feed.partitions),
                    "dead_letter",
                    0,
                    "changes up to this event were trimmed from the feed before they were "
                    "delivered (CONSENT_FEED_MAXLEN): re-export (ExportConsent)",
                    0,
                    0,
                    self._clock_ms(),
                ),
            )
            await self._hooks.advance(hook.tenant_id, hook.name, part, oldest[part])

    async def _partition(self, hook: ChangeWebhook, part: int, entries: list[FeedEntry]) -> int:
        done = 0
        current: ChangeWebhook | None = hook
        for entry in entries:
            if self._stop.is_set():
                break
            if entry.tenant_id == hook.tenant_id and hook.wants(entry):
                opts = self.options
                if not await self._hooks.lease(
                    hook.tenant_id, hook.name, opts.owner, opts.lease_ms
                ):
                    break  # another dispatcher took the endpoint over
                current, item = await self._deliver(hook, part, entry)
                if item is None:  # deleted, or another dispatcher took over
                    break
                await self._hooks.record(hook.tenant_id, hook.name, item)
                done += 1
            if current is None:
                break
            await self._hooks.advance(hook.tenant_id, hook.name, part, entry.entry_id)
        return done

    async def _deliver(
        self, hook: ChangeWebhook, part: int, entry: FeedEntry
    ) -> tuple[ChangeWebhook | None, DeliveryRecord | None]:
        """POST one change until it is delivered or given up."""
        opts = self.options
        event_id = feed_event_id(part, entry.entry_id, self._feed.partitions)
        body = json.dumps(
            change_payload(hook.tenant_id, event_id, entry),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        attempts = 0
        current = hook
        while True:
            attempts += 1
            got = await self._post(current, event_id, body)
            if got.ok or got.permanent or attempts >= opts.max_attempts:
                status = "delivered" if got.ok else "dead_letter"
                m.CHANGE_WEBHOOK_POSTS.labels(status).inc()
                if not got.ok:
                    log.warning(
                        "change webhook gave up on a change: dead letter",
                        extra={
                            "tenant_id": hook.tenant_id,
                            "webhook": hook.name,
                            "event_id": event_id,
                            "attempts": attempts,
                            "error": got.error,
                        },
                    )
                return current, DeliveryRecord(
                    event_id,
                    status,
                    attempts,
                    got.error,
                    got.status,
                    got.latency_ms,
                    self._clock_ms(),
                )
            m.CHANGE_WEBHOOK_POSTS.labels("retried").inc()
            wait_s = opts.retry_wait_ms(attempts) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait_s)
            if self._stop.is_set():
                return current, None
            # Still ours, still there, and perhaps with a new URL or secret.
            if not await self._hooks.lease(hook.tenant_id, hook.name, opts.owner, opts.lease_ms):
                return current, None
            fresh = await self._hooks.get(hook.tenant_id, hook.name)
            if fresh is None:
                return None, None
            current = fresh

    async def _post(self, hook: ChangeWebhook, event_id: str, body: bytes) -> _Attempt:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "consent-authority-change-webhooks/1",
            EVENT_ID_HEADER: event_id,
            "Idempotency-Key": event_id,
            WEBHOOK_HEADER: hook.name,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(hook.secret, timestamp, body),
        }
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            resp = await self._http.post(
                hook.url, content=body, headers=headers, follow_redirects=False
            )
        except EgressRefused as exc:
            return _Attempt(False, True, str(exc), 0, took())
        except httpx.InvalidURL:
            return _Attempt(False, True, "destination refused: not a valid URL", 0, took())
        except httpx.TimeoutException:
            return _Attempt(False, False, "timeout", 0, took())
        except httpx.HTTPError as exc:
            return _Attempt(False, False, f"unreachable: {type(exc).__name__}", 0, took())
        code = resp.status_code
        if 200 <= code < 300:
            return _Attempt(True, False, "", code, took())
        if 300 <= code < 400:
            return _Attempt(False, True, f"http {code}: redirects are not followed", code, took())
        permanent = 400 <= code < 500 and code not in RETRY_STATUS
        return _Attempt(False, permanent, f"http {code}", code, took())


__all__ = ["EVENT_ID_HEADER", "WEBHOOK_HEADER", "ChangeWebhookDispatcher", "DispatchOptions"]
