"""The Redis repository: the one class that talks to Redis (domain.ports.ConsentStore)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rex

from consent_server.domain.decision import decide
from consent_server.domain.errors import (
    IdConflict,
    SettingsConflict,
    StoreUnavailable,
    TenantNotFound,
)
from consent_server.domain.model import (
    ChangeOutcome,
    Channel,
    ConfirmedChange,
    ConsentEventInput,
    EventPage,
    MessageState,
    MessageStatusInfo,
    OutboundMessage,
    Policy,
    Recipient,
    SendAccepted,
    SendBlocked,
    SendInput,
    TenantSettings,
)
from consent_server.domain.ports import RecordPair
from consent_server.metrics import STORE_CALL

from . import keys
from .batch_read import BatchKeys, lean_capable, pipelined
from .client import RedisClient
from .multiplex import run_script
from .records import (
    encode_body,
    encode_settings,
    fields,
    parse_event,
    parse_outcome,
    parse_packed_record,
    parse_record,
    parse_settings,
    record_event_args,
    text,
)
from .replication import acks_of
from .retention import feed_keys, feed_maxlen
from .scripts import load_script
from .tombstones import TombstoneNames, newer

T = TypeVar("T")

IDEMPOTENCY_TTL_S = 24 * 3600
MESSAGE_RETENTION_S = 30 * 24 * 3600
SETTINGS_CACHE_S = 1.0

# Errors that mean "the store is not reachable or not serving": fail closed.
# Shared by every store module. RedisClusterException is what the cluster client raises
# when no node answers at all (it is no ConnectionError).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.BusyLoadingError,
    rex.ReadOnlyError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.RedisClusterException,
    OSError,
)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"consent store unreachable: {type(exc).__name__}")


_REDIS_DIR = os.path.dirname(rex.__file__) + os.sep


def _raised_in_redis(exc: BaseException) -> bool:
    """True when ``exc`` was raised by code of the redis-py package itself."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(_REDIS_DIR)


async def guarded(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one store operation; an outage becomes StoreUnavailable (fail closed).

    Every store module goes through this, so they agree on what counts as an outage,
    and its duration is the ``consent_store_call_seconds`` histogram."""
    started = time.perf_counter()
    timer = _CALL_ERROR
    try:
        result = await fn()
        timer = _CALL_OK
        return result
    except UNAVAILABLE_ERRORS as exc:
        timer = _CALL_UNAVAILABLE
        raise _unavailable(exc) from exc
    except rex.ResponseError as exc:
        # A primary refusing writes for too few replicas (min-replicas-to-write) is an
        # outage to the caller, like a read-only one; redis-py has no class for it.
        if str(exc).startswith("NOREPLICAS"):
            timer = _CALL_UNAVAILABLE
            raise _unavailable(exc) from exc
        raise
    except AttributeError as exc:
        # redis-py's cluster client closes every connection on CLUSTERDOWN (a failover),
        # also those other calls are using; they then fail inside redis-py on a missing
        # socket writer. An outage, not a bug of ours (which stays an AttributeError).
        if _raised_in_redis(exc):
            timer = _CALL_UNAVAILABLE
            raise _unavailable(exc) from exc
        raise
    finally:
        timer.observe(time.perf_counter() - started)


# The histogram's children, resolved once: guarded() runs on every store call.
_CALL_OK = STORE_CALL.labels("ok")
_CALL_UNAVAILABLE = STORE_CALL.labels("unavailable")
_CALL_ERROR = STORE_CALL.labels("error")


class RedisConsentStore:
    """Consent storage on Redis (or the embedded fakeredis); every change is one Lua script."""

    def __init__(self, client: RedisClient, *, settings_cache_s: float = SETTINGS_CACHE_S):
        self._r: RedisClient = client
        self._record = client.register_script(load_script("record_event.lua"))
        self._send = client.register_script(load_script("send.lua"))
        self._put_settings = client.register_script(load_script("put_settings.lua"))
        self._read_states = client.register_script(load_script("read_states.lua"))
        self._history = client.register_script(load_script("history_page.lua"))
        # tenant -> (read at, settings, whether the tenant exists)
        self._settings_cache: dict[str, tuple[float, TenantSettings, bool]] = {}
        self._settings_cache_s = settings_cache_s
        self.tombstones = TombstoneNames(client)
        self._acks = acks_of(client)
        self._batch_keys = BatchKeys()
        self._lean = lean_capable(client)

    @property
    def client(self) -> RedisClient:
        """The underlying client (tests and health checks use it)."""
        return self._r

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await guarded(fn)

    async def _write(self, key: str, fn: Callable[[RedisClient], Awaitable[T]]) -> T:
        """Run one acknowledged write: ``fn(client)`` on the primary of ``key``'s slot,
        then (CONSENT_REDIS_MIN_REPLICAS_ACK) wait for replicas on that connection."""
        return await guarded(lambda: self._acks.write(key, fn))

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        await self._call(self._r.ping)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._acks.aclose()
        await self._r.aclose()

    # -- tenant settings -------------------------------------------------------------

    async def tenant_settings(self, tenant_id: str) -> TenantSettings:
        """The tenant's settings, cached for about a second per process (defaults for a
        tenant that does not exist: callers that must refuse those use tenant_lookup).

        A write through this object drops its cache entry, so the next call in this
        process sees it; other processes see it once their entry expires."""
        return (await self._cached(tenant_id))[0]

    async def tenant_lookup(self, tenant_id: str) -> TenantSettings | None:
        """The tenant's settings, or None when the tenant does not exist.

        The same cached read as tenant_settings: the registry entry lives in the settings
        hash, so the existence check costs no extra round trip."""
        settings, exists = await self._cached(tenant_id)
        return settings if exists else None

    def forget_cached_settings(self, tenant_id: str) -> None:
        """Drop the tenant's cache entry (the registry changed it in this process)."""
        self._settings_cache.pop(tenant_id, None)

    async def _cached(self, tenant_id: str) -> tuple[TenantSettings, bool]:
        now = time.monotonic()
        cached = self._settings_cache.get(tenant_id)
        if cached and now - cached[0] < self._settings_cache_s:
            return cached[1], cached[2]
        raw = fields(await self._call(lambda: self._r.hgetall(keys.tenant_settings(tenant_id))))
        settings = parse_settings(raw)
        exists = keys.TENANT_CREATED_FIELD in raw
        if len(self._settings_cache) > 10_000:
            self._settings_cache.clear()
        self._settings_cache[tenant_id] = (now, settings, exists)
        return settings, exists

    async def fresh_tenant_settings(self, tenant_id: str) -> TenantSettings:
        """The tenant's settings read from the store now (for read-modify-write)."""
        self._settings_cache.pop(tenant_id, None)
        return await self.tenant_settings(tenant_id)

    async def put_tenant_settings(self, tenant_id: str, settings: TenantSettings) -> None:
        """Replace the tenant's settings if they are still at ``settings.version``.

        Raises SettingsConflict when another writer got there first (re-read and retry),
        TenantNotFound (nothing written) when the tenant does not exist."""
        fields = encode_settings(settings)
        args: list[str | int] = [str(settings.version)]
        for name, value in fields.items():
            args += [name, value]
        key = keys.tenant_settings(tenant_id)
        try:
            version = await self._write(
                key, lambda c: self._put_settings(keys=[key], args=args, client=c)
            )
        finally:
            self._settings_cache.pop(tenant_id, None)
        if int(version) == -2:
            raise TenantNotFound(tenant_id)
        if int(version) < 0:
            raise SettingsConflict("tenant settings changed meanwhile")

    # -- reads -----------------------------------------------------------------------

    async def read_records(
        self, tenant_id: str, recipients: Sequence[Recipient], topic: str
    ) -> list[RecordPair]:
        """Each recipient's records merged with its erasure tombstone: one read_states.lua
        call per partition, the partitions read concurrently.

        A recipient's record bucket and tombstone share its hash tag, so each script touches
        one slot (Redis Cluster), and a batch of any size costs at most PARTITIONS round
        trips (one for CheckConsent). Per scope the newer of the live and the tombstone
        record decides.
        """
        field = keys.scope_field(topic) if topic else ""
        secret = await self._tenant_secret(tenant_id)

        async def read() -> list[Any]:
            # partition -> (positions in the request, [bucket, tombstone] keys, args)
            groups: dict[int, tuple[list[int], list[str], list[str]]] = {}
            for part, positions in keys.by_partition(tenant_id, recipients).items():
                pair_keys: list[str] = []
                args = [field]
                for i in positions:
                    rcpt = recipients[i]
                    b = keys.bucket(tenant_id, rcpt)
                    pair_keys.append(keys.record_bucket(part, tenant_id, b))
                    pair_keys.append(
                        keys.tombstone(
                            tenant_id, rcpt, TombstoneNames.digest(secret, rcpt), part=part
                        )
                    )
                    args.append(keys.descriptor(rcpt, b))
                groups[part] = (positions, pair_keys, args)
            calls = [run_script(self._r, self._read_states, k, a) for _, k, a in groups.values()]
            # One partition (every CheckConsent) needs no gather: that would wrap the
            # call in a task and cost loop turns on the hottest path.
            replies = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
            rows: list[Any] = [None] * (2 * len(recipients))
            for (positions, _, _), reply in zip(groups.values(), replies, strict=True):
                for n, i in enumerate(positions):
                    rows[2 * i], rows[2 * i + 1] = reply[2 * n], reply[2 * n + 1]
            return rows

        rows = await self._call(read)
        out: list[RecordPair] = []
        for live, tomb in zip(rows[0::2], rows[1::2], strict=True):
            all_record = newer(parse_record(live[0]), parse_record(tomb[0]))
            if topic:
                out.append((newer(parse_record(live[1]), parse_record(tomb[1])), all_record))
            else:
                out.append((None, all_record))
        return out

    async def read_batch(
        self, tenant_id: str, recipients: Sequence[tuple[Channel, str]], topic: str
    ) -> list[RecordPair | None]:
        """read_records for BatchCheckConsent, leaner: None where a recipient has no
        record at all (the common case, decided by the policy alone), else its pair.

        On one Redis node: plain HMGETs of each record bucket and tombstone on one
        connection, one round trip for the whole batch (store/batch_read.py says why no
        script is needed). Elsewhere (cluster, fakeredis): read_records."""
        if not self._lean:
            pairs = await self.read_records(
                tenant_id, [Recipient(c, a) for c, a in recipients], topic
            )
            return [None if p[0] is None and p[1] is None else p for p in pairs]
        secret = await self._tenant_secret(tenant_id)
        payload = self._batch_keys.commands(tenant_id, secret, recipients, topic)
        client = self._r
        assert isinstance(client, aioredis.Redis)
        rows = await self._call(lambda: pipelined(client, payload, 2 * len(recipients)))
        out: list[RecordPair | None] = []
        append = out.append
        missing = [None] * (2 if topic else 1)
        for n in range(0, len(rows), 2):
            live, tomb = rows[n], rows[n + 1]
            if live == missing and tomb == missing:
                append(None)
                continue
            # The main field: "<event count>" [";" <all-topics record, packed>].
            main = text(live[0])
            live_all = parse_packed_record(main.partition(";")[2]) if main else None
            all_record = newer(live_all, parse_record(tomb[0]))
            if topic:
                live_topic = parse_packed_record(text(live[1])) if live[1] else None
                topic_record = newer(live_topic, parse_record(tomb[1]))
                pair: RecordPair = (topic_record, all_record)
            else:
                pair = (None, all_record)
            append(None if pair == (None, None) else pair)
        return out

    async def list_events(
        self, tenant_id: str, recipient: Recipient, limit: int, before_revision: int | None
    ) -> EventPage:
        """History newest first; fetches one extra entry to know whether a next page exists."""
        if before_revision is not None and before_revision <= 1:
            return EventPage([], None)  # no revision below 1
        bucket, prefix, descriptor = keys.layout(tenant_id, recipient)
        # "before": revisions below it; the script's bound is inclusive (0: the newest).
        top = 0 if before_revision is None else before_revision - 1
        flat = (
            await self._call(
                lambda: self._history(keys=[bucket, prefix], args=[descriptor, top, limit + 1])
            )
        )[0]
        entries = list(zip(flat[0::2], flat[1::2], strict=True))
        events = [parse_event(int(seq), text(value)) for seq, value in entries[:limit]]
        more = len(entries) > limit
        return EventPage(events, events[-1].revision if more and events else None)

    async def message_status(self, tenant_id: str, message_id: str) -> MessageStatusInfo | None:
        """A message's status; None for unknown ids and other tenants' ids."""
        part = keys.message_partition(message_id)
        if part is None:
            return None
        f = fields(
            await self._call(lambda: self._r.hgetall(keys.message(tenant_id, part, message_id)))
        )
        if not f:
            return None
        return MessageStatusInfo(
            message_id=message_id,
            state=MessageState(f["st"]),
            recipient=Recipient(Channel(f["ch"]), f["addr"]),
            topic=f["topic"],
            attempts=int(f.get("att") or 0),
            last_error=f.get("err", ""),
            provider_message_id=f.get("pid", ""),
            accepted_at_ms=int(f["at"]),
            updated_at_ms=int(f.get("up") or f["at"]),
        )

    # -- writes ----------------------------------------------------------------------

    async def record_event(self, event: ConsentEventInput) -> ChangeOutcome:
        """Run record_event.lua: idempotency, ordering, revision and history in one step."""
        outcome, _ = await self._run_record(event, [], [])
        return outcome

    async def record_inbound(
        self, event: ConsentEventInput, confirmation: OutboundMessage
    ) -> ConfirmedChange:
        """Run record_event.lua with the recipient's outbox: when the event changes the
        scope's status, ``confirmation`` is queued (purpose ``confirmation``) in the same
        atomic step; a replay of the event id returns the first outcome and queues nothing."""
        part = keys.partition(event.tenant_id, event.recipient)
        message_id = keys.new_message_id(part)
        extra_keys = [keys.outbox(part), keys.message(event.tenant_id, part, message_id)]
        extra_args: list[str | int] = [
            message_id,
            event.tenant_id,
            event.recipient.channel.value,
            event.recipient.address,
            encode_body(confirmation),
            MESSAGE_RETENTION_S,
        ]
        outcome, queued = await self._run_record(event, extra_keys, extra_args)
        return ConfirmedChange(outcome, queued)

    async def _tenant_secret(self, tenant_id: str) -> bytes:
        """The tenant's tombstone secret: no I/O (and no guarded call) once it is held."""
        secret = self.tombstones.cached_secret(tenant_id)
        if secret is None:
            secret = await self._call(lambda: self.tombstones.secret(tenant_id))
        return secret

    async def _tombstone_keys(self, tenant_id: str, recipient: Recipient) -> tuple[str, str]:
        """The recipient's tombstone and message index keys: no I/O (and no guarded call)
        once the tenant's secret is held, which is every call but the first."""
        pair = self.tombstones.cached_keys(tenant_id, recipient)
        if pair is None:
            pair = await self._call(lambda: self.tombstones.keys(tenant_id, recipient))
        return pair

    async def _run_record(
        self, event: ConsentEventInput, extra_keys: list[str], extra_args: list[str | int]
    ) -> tuple[ChangeOutcome, str]:
        part = keys.partition(event.tenant_id, event.recipient)
        bucket, prefix, descriptor = keys.layout(event.tenant_id, event.recipient, part)
        # Every write reads the recipient's tombstone in the same script: an event dated
        # at or before an erasure changes and stores nothing (record_event.lua).
        tomb, index = await self._tombstone_keys(event.tenant_id, event.recipient)
        args: list[str | int] = [
            *record_event_args(event, feed_maxlen(self._r), descriptor),
            *extra_args,
        ]
        script_keys = [
            bucket,
            prefix,
            tomb,
            index,
            *feed_keys(event.tenant_id, part),
            *extra_keys,
        ]
        kind, outcome, queued = await self._write(
            script_keys[0], lambda c: self._record(keys=script_keys, args=args, client=c)
        )
        if int(kind) == 3:  # dated at or before the recipient's erasure: nothing written
            return parse_outcome(outcome, event.event_id, duplicate=False), ""
        first = parse_outcome(outcome, event.event_id, duplicate=True)
        if int(kind) == 2:
            raise IdConflict(
                "event_id",
                "EVENT_ID_REUSED",
                f"event_id was already used for a different change of this recipient "
                f"(revision {first.revision}); use a new event_id for a new change",
            )
        return parse_outcome(outcome, event.event_id, duplicate=int(kind) == 1), text(queued)

    async def send(self, request: SendInput, policy: Policy) -> SendAccepted | SendBlocked:
        """Run send.lua: idempotency, decision, outbox append and status record in one step."""
        part = keys.partition(request.tenant_id, request.recipient)
        base = keys.partition_base(part, request.tenant_id, request.recipient)
        message_id = keys.new_message_id(part)
        tomb, index = await self._tombstone_keys(request.tenant_id, request.recipient)
        bucket, _, descriptor = keys.layout(request.tenant_id, request.recipient, part)
        script_keys = [
            bucket,
            keys.idempotency(base, request.idempotency_key or "-"),
            keys.outbox(part),
            keys.message(request.tenant_id, part, message_id),
            tomb,
            index,
        ]
        body = encode_body(request.message)
        metadata = json.dumps(request.metadata, ensure_ascii=False, sort_keys=True)
        # What makes two sends "the same request" for the idempotency key.
        fingerprint = hashlib.sha256(
            "\x00".join([request.topic, body, str(request.not_after_ms), metadata]).encode()
        ).hexdigest()[:32]
        args = [
            keys.scope_field(request.topic),
            "allow" if policy is Policy.ALLOW_UNLESS_OPTED_OUT else "require_opt_in",
            "1" if request.idempotency_key else "0",
            IDEMPOTENCY_TTL_S,
            MESSAGE_RETENTION_S,
            message_id,
            request.tenant_id,
            request.recipient.channel.value,
            request.recipient.address,
            request.topic,
            body,
            request.not_after_ms,
            metadata,
            fingerprint,
            request.idempotency_key,
            descriptor,
        ]
        reply = await self._write(
            script_keys[0], lambda c: run_script(c, self._send, script_keys, args)
        )
        kind = text(reply[0])
        if kind == "accepted":
            return SendAccepted(text(reply[1]), int(reply[2]), int(reply[3]), duplicate=False)
        if kind in ("duplicate", "conflict"):
            first_id, accepted, revision, _ = text(reply[1]).split("|")
            if kind == "conflict":
                raise IdConflict(
                    "idempotency_key",
                    "IDEMPOTENCY_KEY_REUSED",
                    "idempotency_key was already used for a different message to this "
                    "recipient within 24 hours; use a new key for a new message",
                )
            return SendAccepted(first_id, int(accepted), int(revision), duplicate=True)
        # Blocked: rebuild the decision with the pure rule for the error details.
        all_record, topic_record = (parse_record(r or None) for r in reply[1:3])
        decision = decide(topic_record, all_record, policy)
        if decision.allowed:  # the Lua and Python rules disagree: a bug, never a silent send
            raise RuntimeError("send.lua blocked a send the decision rule allows")
        return SendBlocked(decision)
