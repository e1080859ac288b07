"""Bulk import and export on Redis (domain.ports.BulkConsentStore).

Imports apply each event with record_event.lua, the script OptOut and OptIn run, so
ordering, erasure tombstones and event-id idempotency are the same rules. The script's
text is not copied: ``batch_script`` wraps it, unchanged, in a Lua function and calls it
once per event, so one EVALSHA applies a partition's events of a batch in order (every
key of a recipient carries its partition's hash tag, so the call touches one slot, as
Redis Cluster requires). A batch's calls (one per partition, per APPLY_CHUNK events)
are sent pipelined: one round trip per batch (per node on a cluster), however many
partitions it spans; each call is atomic, and each event inside it is exactly what a
single OptOut/OptIn call would have done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from consent_server.domain.errors import StoreUnavailable
from consent_server.domain.imports import Outcome, RecipientView, ScopeRecord
from consent_server.domain.model import (
    Channel,
    ConsentEventInput,
    ExportedRecord,
    ExportPage,
    ExportQuery,
    Recipient,
    Status,
)

from . import keys
from .client import RedisClient
from .records import import_profile, parse_record, text
from .replication import acks_of
from .repository import guarded
from .retention import feed_keys, feed_maxlen
from .scripts import load_script
from .tombstones import TombstoneNames

EXPORT_PAGE = 1000
# Events per script call: bounds how long one call keeps Redis busy (~ms).
APPLY_CHUNK = 250
# Replica-acknowledged import calls in flight at once (each holds a pinned connection).
_ACKED_IN_FLIGHT = 16
_SCAN_COUNT = 1000
_CHANNELS = {c.value: c for c in Channel}
_STATUS = {"in": Status.OPTED_IN, "out": Status.OPTED_OUT}


def batch_script(record_event_src: str, layout_src: str) -> str:
    """record_event.lua, unchanged, as a function applied to each event in turn, with a
    lean path for an event whose recipient the store holds nothing of.

    KEYS: the partition's history bucket prefix, change feed, feed trim mark, record
    bucket prefix and tombstone prefix (every key the call touches is named from these,
    all in the partition's slot); ARGV[1]: the call's tenant, feed max length and bucket
    count, NUL-joined; ARGV[2]: how many profiles follow, 8 values each (records.
    import_profile: what events share, an import's records mostly all of it); then 6
    values per event (its profile's number, event id, time, address, record bucket in
    hex, tombstone digest). What a call shares is sent, parsed and turned into Lua
    strings once, not per event (arguments were most of Redis's time outside the
    commands themselves); the message index is not sent (an import queues no
    confirmation, so record_event.lua never
    touches it). Returns one
    letter per event, in order: record_event.lua's reply as the import counts it
    (``_OUTCOME``), not its three values.

    The lean path (``first_event``): when the recipient has no tombstone (one EXISTS) and
    no record (one HEXISTS, or the HSETNX that writes an all-topics record),
    record_event.lua's outcome is fixed: revision 1, applied and changed, no
    confirmation. ``first_event`` writes exactly what
    record_event.lua writes then (state, history, change feed entry), with far fewer
    calls (most of an import's Redis time is per call: no idempotency look-up, no
    tombstone or topic reads; for an all-topics event one HSETNX both checks and writes
    the record). Anything else (a known
    recipient, an erasure, a replay) runs record_event.lua itself.
    tests/test_imports_script.py compares every key both write, so whatever
    record_event.lua comes to write for a first event must be written here too."""
    return (
        "local function record_one(KEYS, ARGV)\n"
        + record_event_src
        + "\nend\n"
        + layout_src
        + _FIRST_EVENT
    )


_FIRST_EVENT = r"""
-- b36(n), its digits above the last four looked up (an import's times share them).
-- BYTE[d]: the byte of B36's digit d (a constructor: no loop of calls per call).
local BYTE = {[0] = 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102, 103,
  104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122}
local HIGH = {}
local function b36_time(n)
  n = math.floor(tonumber(n))
  if n < 1679616 then return b36(n) end
  local lo = n % 1679616
  local hi = (n - lo) / 1679616
  local h = HIGH[hi]
  if not h then
    h = b36(hi)
    HIGH[hi] = h
  end
  local a = lo % 36
  lo = (lo - a) / 36
  local b = lo % 36
  lo = (lo - b) / 36
  local c = lo % 36
  return h .. string.char(BYTE[(lo - c) / 36], BYTE[c], BYTE[b], BYTE[a])
end
local t = redis.call('TIME')
local recorded = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local recorded_s = string.format('%d', recorded)
local recorded_36 = b36_time(recorded)
-- The call's shared keys and values (one partition, one tenant).
local prefix, feed, mark = KEYS[1], KEYS[2], KEYS[3]
local tenant, maxlen_s, buckets_s = string.match(ARGV[1], '^([^%z]*)%z([^%z]*)%z([^%z]*)$')
local maxlen = tonumber(maxlen_s)
-- The feed's length as of the last XADD here (one XLEN per call, not per event);
-- record_one appends on its own, so it forgets it.
local feed_len = false
-- record_event.lua for a recipient with no state, history or tombstone: revision 1,
-- applied, changed (nothing was before it), no confirmation (no outbox keys). The
-- values are layout.lua's (pack_record, pack_event, put_long, event_key), built with
-- the call's one TIME and one base-36 time, each bucket written by one HSET.
-- pack_record(action, occurred, 1, source, event_id) with occurred in base 36.
local function packed_record(action, occurred_36, source, event_id)
  return string.sub(action, 1, 1) .. occurred_36 .. ',1,' .. (SRC[source] or source) .. ','
    .. event_id
end
-- What follows the record's write (the caller's: "1;<record>" in the main field, or
-- the topic's record and "1"): the change feed entry and the history event.
local function first_event(event_id, action, topic, source, evidence, occurred, occurred_36,
                           principal, channel, address, rf, bhex)
  local src = SRC[source] or source
  -- The change feed, as record_event.lua appends it (trim mark included).
  local len = feed_len or redis.call('XLEN', feed)
  if len >= maxlen then
    local old = redis.call('XRANGE', feed, '-', '+', 'COUNT', len - maxlen + 1)
    if #old > 0 then redis.call('SET', mark, old[#old][1]) end
  end
  local feed_id = redis.call('XADD', feed, 'MAXLEN', maxlen_s, '*',
    'k', 'change', 'tn', tenant, 'ch', channel, 'addr', address, 'a', action,
    't', topic, 's', source, 'o', occurred, 'r', recorded_s,
    'rev', '1', 'id', event_id, 'chg', '1', 'p', principal)
  feed_len = math.min(len + 1, maxlen)
  -- The history event 1 (pack_event with applied = changed = 1, status = action), in
  -- event_key(rc, 1)'s bucket and field.
  local feed_short = feed_id
  if string.sub(feed_id, 1, #recorded_s + 1) == recorded_s .. '-' then
    feed_short = string.sub(feed_id, #recorded_s + 1)
  end
  local f = string.sub(action, 1, 1)
  local v = f .. '11' .. f .. US .. topic .. US .. src .. US .. occurred_36 .. US
    .. recorded_36 .. US .. event_id .. US .. principal .. US .. feed_short .. US .. ''
    .. US .. evidence
  -- event_key(rc, 1)'s bucket: the record's own (b < buckets).
  local hkey = prefix .. bhex
  local hfield = rf .. US .. '1'
  if #v <= CHUNK then
    redis.call('HSET', hkey, hfield, v)
  else
    local args = {hfield, string.sub(v, 1, CHUNK)}
    local n, pos = 1, CHUNK + 1
    while pos <= #v do
      args[#args + 1] = hfield .. US .. n
      args[#args + 1] = string.sub(v, pos, pos + CHUNK - 1)
      n, pos = n + 1, pos + CHUNK
    end
    redis.call('HSET', hkey, unpack(args))
  end
  return 'c'
end
-- record_event.lua's reply as one letter (what the import counts; store/bulk.py
-- _OUTCOME): d replay, r id reused, e before the erasure, o ignored as older,
-- c applied and changed, a applied.
local KIND = {[1] = 'd', [2] = 'r', [3] = 'e'}
local function outcome(reply)
  local kind = KIND[reply[1]]
  if kind then return kind end
  local flags = string.sub(reply[2], 1, 3)
  if string.sub(flags, 1, 1) ~= '1' then return 'o' end
  if flags == '1|1' then return 'c' end
  return 'a'
end
-- What the call's events share (an import's records mostly share all of it): ARGV[2]
-- profiles of 8 values each (action, field, topic, source, evidence, principal,
-- channel, channel letter); then 6 values per event: its profile's number, event id,
-- time, address, record bucket (hex) and tombstone digest. Keys are named here from the
-- partition's prefixes (KEYS[4], KEYS[5]), as the history buckets always were.
local PROFILES = {}
local nprof = tonumber(ARGV[2])
for k = 1, nprof do
  PROFILES[k] = {unpack(ARGV, 8 * k - 5, 8 * k + 2)}
end
local records_prefix, tombs_prefix = KEYS[4], KEYS[5]
local first_arg = 3 + 8 * nprof
local out = {}
for i = 1, (#ARGV - first_arg + 1) / 6 do
  local at = first_arg + 6 * (i - 1)
  local k, event_id, occurred, address, bhex, digest = unpack(ARGV, at, at + 5)
  local action, field, topic, source, evidence, principal, channel, letter =
    unpack(PROFILES[tonumber(k)])
  local rf = letter .. address
  local bucket, tomb = records_prefix .. bhex, tombs_prefix .. channel .. ':' .. digest
  local lean = false
  if redis.call('EXISTS', tomb) == 0 then
    if field == 's:*' then
      -- The record written only if the recipient has none (HSETNX: the check and the
      -- write in one command).
      local occurred_36 = b36_time(occurred)
      lean = redis.call('HSETNX', bucket, rf, '1;' .. packed_record(action, occurred_36,
        source, event_id)) == 1
      if lean then
        out[i] = first_event(event_id, action, topic, source, evidence,
          occurred, occurred_36, principal, channel, address, rf, bhex)
      end
    elseif redis.call('HEXISTS', bucket, rf) == 0 then
      local occurred_36 = b36_time(occurred)
      redis.call('HSET', bucket, rf .. US .. string.sub(field, 3),
        packed_record(action, occurred_36, source, event_id), rf, '1')
      lean = true
      out[i] = first_event(event_id, action, topic, source, evidence,
        occurred, occurred_36, principal, channel, address, rf, bhex)
    end
  end
  if not lean then
    feed_len = false
    -- record_event.lua's KEYS (no message index: an import queues no confirmation)
    -- and ARGV (record_event_args).
    out[i] = outcome(record_one({bucket, prefix, tomb, '', feed, mark},
      {event_id, action, field, topic, source, evidence, occurred, principal, tenant,
       channel, address, maxlen_s,
       rf .. US .. string.format('%d', tonumber(bhex, 16)) .. US .. buckets_s}))
  end
end
return out
"""


def _scope_record(raw: bytes | str) -> ScopeRecord | None:
    parts = text(raw).split("|", 3)
    if len(parts) < 3 or parts[0] not in _STATUS:
        return None
    return ScopeRecord(_STATUS[parts[0]], int(parts[1]), int(parts[2]))


def _pairs(flat: Sequence[Any]) -> list[tuple[str, Any]]:
    return [(text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]


def _view(seen_flags: Sequence[Any], ids: Sequence[str], scopes: Any, tomb: Any) -> RecipientView:
    view = RecipientView()
    view.seen = {i: text(fp) for i, fp in zip(ids, seen_flags, strict=True) if fp}
    for f, value in _pairs(scopes):
        rec = _scope_record(value)
        if rec is not None:
            view.scopes[f] = rec
    erased_at: int | None = None
    for f, value in _pairs(tomb):
        if f == "at":
            erased_at = int(text(value))
        elif f.startswith("s:"):
            rec = _scope_record(value)
            if rec is not None:
                view.tombstone[f] = rec
    if erased_at is None and view.tombstone:
        # A tombstone written before the erasure time was kept (record_event.lua).
        erased_at = max(r.occurred_at_ms for r in view.tombstone.values())
    view.erased_at = erased_at
    return view


class RedisBulkStore:
    """ImportConsent's and ExportConsent's storage."""

    def __init__(self, client: RedisClient, tombstones: TombstoneNames | None = None) -> None:
        self._r: RedisClient = client
        self._tombstones = tombstones or TombstoneNames(client)
        self._acks = acks_of(client)
        self._apply = client.register_script(
            batch_script(load_script("record_event.lua"), load_script("layout.lua"))
        )
        self._view = client.register_script(load_script("import_view.lua"))
        self._scopes = client.register_script(load_script("export_scopes.lua"))

    async def _tomb_key(self, tenant_id: str, recipient: Recipient) -> tuple[str, str]:
        return await self._tombstones.keys(tenant_id, recipient)

    # -- import ------------------------------------------------------------------------

    async def views(
        self, tenant_id: str, wanted: Sequence[tuple[Recipient, Sequence[str]]]
    ) -> list[RecipientView]:
        """One import_view.lua call per partition, all sent pipelined. Writes nothing (a
        dry run reads only): a tenant without an erasure secret has no tombstone, and a
        digest that is no hex string names none."""
        secret = await guarded(lambda: self._tombstones.existing_secret(tenant_id))
        groups: list[tuple[list[int], list[str], list[str | int]]] = []
        for part, positions in keys.by_partition(tenant_id, [r for r, _ in wanted]).items():
            kk: list[str] = []
            args: list[str | int] = []
            for n in positions:
                rcpt, ids = wanted[n]
                bucket, _, descriptor = keys.layout(tenant_id, rcpt, part)
                kk.append(bucket)
                digest = "none" if secret is None else TombstoneNames.digest(secret, rcpt)
                kk.append(keys.tombstone(tenant_id, rcpt, digest, part=part))
                args.append(descriptor)
                args.append(len(ids))
                args.extend(ids)
            groups.append((positions, kk, args))
        calls = [(kk, args) for _, kk, args in groups]
        replies = await guarded(lambda: self._calls(self._view, calls))
        out: list[RecipientView | None] = [None] * len(wanted)
        for (positions, _, _), reply in zip(groups, replies, strict=True):
            for n, (seen, scopes, tomb) in zip(positions, reply, strict=True):
                out[n] = _view(seen, wanted[n][1], scopes, tomb)
        return [v if v is not None else RecipientView() for v in out]

    async def apply(
        self, events: Sequence[ConsentEventInput], *, queued: Callable[[], None] | None = None
    ) -> list[str]:
        """record_event.lua for every event, in order: one batch_script call per
        partition (per APPLY_CHUNK events), every call of the batch sent pipelined.

        ``queued`` (domain.ports.BulkConsentStore.apply): called once these writes are
        queued on the shared connection, so that an apply started after it is applied
        after them; without one (a pool, a cluster, replica acks) it is called when the
        writes are done. An apply given ``queued`` never re-sends on NOSCRIPT (another
        may be queued behind it, and a re-send would overtake it): it fails instead."""
        if not events:
            if queued is not None:
                queued()
            return []
        tenant_id = events[0].tenant_id
        secret = await guarded(lambda: self._tombstones.secret(tenant_id))
        maxlen = str(feed_maxlen(self._r))
        name = TombstoneNames.digester(secret)
        by_part: dict[int, list[int]] = {}
        buckets: list[int] = [0] * len(events)
        for n, e in enumerate(events):
            part, buckets[n] = keys.placement(tenant_id, e.recipient)
            by_part.setdefault(part, []).append(n)
        positions_of: list[list[int]] = []
        calls: list[tuple[list[str], list[str]]] = []
        shared = f"{tenant_id}\0{maxlen}\0{keys.BUCKETS_PER_PARTITION}"
        for part, positions in by_part.items():
            head = [
                keys.history_prefix(part, tenant_id),
                *feed_keys(tenant_id, part),
                keys.record_bucket_prefix(part, tenant_id),
                keys.tombstone_prefix(part, tenant_id),
            ]
            for start in range(0, len(positions), APPLY_CHUNK):
                chunk = positions[start : start + APPLY_CHUNK]
                profiles: dict[tuple[str, ...], str] = {}
                shared_args: list[str] = []
                per_event: list[str] = []
                last: ConsentEventInput | None = None
                number = ""
                for n in chunk:
                    e = events[n]
                    rcpt = e.recipient
                    # Most events share the one before them's profile: the values
                    # import_profile reads, compared by identity and equality, without
                    # building and hashing its key.
                    if not (
                        last is not None
                        and e.action is last.action
                        and e.source is last.source
                        and rcpt.channel is last.recipient.channel
                        and e.topic == last.topic
                        and e.evidence == last.evidence
                        and e.principal == last.principal
                    ):
                        profile = import_profile(e)
                        found = profiles.get(profile)
                        if found is None:
                            found = profiles[profile] = str(len(profiles) + 1)
                            shared_args += profile
                        number = found
                    last = e
                    per_event += (
                        number,
                        e.event_id,
                        str(e.occurred_at_ms),
                        rcpt.address,
                        f"{buckets[n]:x}",
                        name(rcpt),
                    )
                positions_of.append(chunk)
                calls.append((head, [shared, str(len(profiles)), *shared_args, *per_event]))
        try:
            replies = await guarded(
                lambda: self._calls(self._apply, calls, write=True, queued=queued)
            )
        finally:
            if queued is not None:
                queued()  # done (or failed): nothing of this call is left to overtake
        out = [""] * len(events)
        outcome = _OUTCOME
        for chunk, reply in zip(positions_of, replies, strict=True):
            for n, row in zip(chunk, reply, strict=True):
                out[n] = outcome[row]
        return out

    async def _calls(
        self,
        script: AsyncScript,
        calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
        *,
        write: bool = False,
        queued: Callable[[], None] | None = None,
    ) -> list[Any]:
        """EVALSHA of ``script`` for each (keys, args), replies in order.

        Sent as one pipelined write (on the shared connection, else a redis-py
        pipeline, which a cluster splits by node), not one awaited call each: with many
        partitions a batch makes hundreds of calls, and a call each would cost a
        coroutine and a pooled connection apiece (a pool that runs out fails the
        import). The calls of one partition stay in order on its connection. Writes
        that must wait for replicas go one call at a time per partition through
        ReplicaAck, a bounded number at once."""
        if not calls:
            return []
        if write and self._acks.enabled:
            return await self._acked(script, calls)
        for attempt in (1, 2):
            replies = await self._pipelined(script.sha, calls, queued)
            missing = [isinstance(r, NoScriptError) for r in replies]
            if not any(missing):
                break
            if attempt == 2 or not all(missing) or queued is not None:
                # Part of the pipeline ran and part did not (the script cache was
                # flushed meanwhile): retrying the rest would reorder events. The
                # import's call fails; the client retries (every event id is stable).
                raise StoreUnavailable("consent store: scripts were flushed during an import")
            sha = await self._r.script_load(script.script)
            script.sha = text(sha)
        for r in replies:
            if isinstance(r, Exception):
                raise r
        return replies

    async def _pipelined(
        self,
        sha: str,
        calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
        queued: Callable[[], None] | None = None,
    ) -> list[Any]:
        mux = getattr(self._r, "mux", None)
        if mux is not None and not getattr(self._r, "single_connection_client", False):
            replies: list[Any] = await mux.execute_many(
                [("EVALSHA", sha, len(k), *k, *a) for k, a in calls], queued
            )
            return replies
        pipe = self._r.pipeline(transaction=False)
        for k, a in calls:
            pipe.evalsha(sha, len(k), *k, *a)
        return list(await pipe.execute(raise_on_error=False))

    async def _acked(
        self, script: AsyncScript, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        out: list[Any] = [None] * len(calls)
        by_slot: dict[str, list[int]] = {}
        for i, (k, _) in enumerate(calls):
            by_slot.setdefault(_tag_of(k[0]), []).append(i)
        limit = asyncio.Semaphore(_ACKED_IN_FLIGHT)

        async def run(indices: list[int]) -> None:
            async with limit:
                for i in indices:
                    k, a = calls[i]

                    async def call(client: RedisClient, k: Any = k, a: Any = a) -> Any:
                        return await script(keys=k, args=a, client=client)

                    out[i] = await self._acks.write(k[0], call)

        await asyncio.gather(*(run(ix) for ix in by_slot.values()))
        return out

    # -- export ------------------------------------------------------------------------

    async def export(self, tenant_id: str, query: ExportQuery) -> AsyncIterator[ExportPage]:
        """One SCAN pass over the tenant's record buckets (every partition, every primary
        of a cluster), each SCAN page's buckets read per partition in one script call,
        filtered, yielded in pages; the last page carries the last records."""
        pattern = f"ca:{keys.tag_glob()}:{keys.glob_escape(tenant_id)}:r:*"
        total = int(await guarded(lambda: self._r.dbsize()))
        page: list[ExportedRecord] = []
        batch: list[str] = []
        scanned = 0
        async for key in self._scan(pattern):
            batch.append(key)
            scanned += 1
            if len(batch) >= _SCAN_COUNT:
                page.extend(await self._read_batch(batch, tenant_id, query))
                batch = []
                if len(page) >= EXPORT_PAGE:
                    yield ExportPage(page, scanned, max(total, scanned))
                    page = []
        if batch:
            page.extend(await self._read_batch(batch, tenant_id, query))
        yield ExportPage(page, max(total, scanned), max(total, scanned))

    async def _read_batch(
        self, batch: list[str], tenant_id: str, query: ExportQuery
    ) -> list[ExportedRecord]:
        """Read keys grouped by partition: a script call may touch one slot only."""
        by_part: dict[str, list[str]] = {}
        for key in batch:
            by_part.setdefault(key[: key.index("}") + 1], []).append(key)
        out: list[ExportedRecord] = []
        for tag, group in by_part.items():
            out.extend(await self._read(group, f"{tag}:{tenant_id}:", query))
        return out

    async def _scan(self, pattern: str) -> AsyncIterator[str]:
        seen: set[str] = set()
        # scan_iter on a cluster walks every primary.
        iterator = self._r.scan_iter(match=pattern, count=_SCAN_COUNT)
        while True:
            try:
                key = await guarded(lambda: iterator.__anext__())
            except StopAsyncIteration:
                break
            name = text(key)
            if name not in seen:  # SCAN may return a key twice
                seen.add(name)
                yield name

    async def _read(
        self, batch: list[str], prefix: str, query: ExportQuery
    ) -> list[ExportedRecord]:
        replies: list[Any] = await guarded(lambda: self._scopes(keys=batch, args=[]))
        out: list[ExportedRecord] = []
        for key, flat in zip(batch, replies, strict=True):
            if not key.startswith(prefix + "r:"):
                continue
            rows = [(text(flat[i]), text(flat[i + 1]), flat[i + 2]) for i in range(0, len(flat), 3)]
            for rf, f, value in sorted(rows, key=lambda row: (row[0], row[1])):
                rcpt = _recipient_of(rf)
                if rcpt is None:
                    continue
                if query.channel is not None and rcpt.channel is not query.channel:
                    continue
                topic = "" if f == "s:*" else f[2:]
                if query.scope is not None and topic != query.scope:
                    continue
                rec = parse_record(value)
                if rec is None:
                    continue
                if query.status is not None and rec.status is not query.status:
                    continue
                if query.since_ms is not None and rec.occurred_at_ms < query.since_ms:
                    continue
                out.append(ExportedRecord(rcpt, topic, rec))
        return out


def _recipient_of(rfield: str) -> Recipient | None:
    """The recipient a bucket field names (keys.rfield); None for one that is not."""
    channel = keys.CHANNEL_OF_LETTER.get(rfield[:1])
    address = rfield[1:]
    if channel is None or not address:
        return None
    return Recipient(_CHANNELS[channel], address)


def _tag_of(key: str) -> str:
    """A key's hash tag (the whole key when it has none): calls of one tag run in order."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start : end + 1] if start >= 0 and end > start else key


# The batch script's one-letter outcomes (its ``outcome`` of record_event.lua's reply
# {kind, "applied|changed|...", confirmation}; tests/test_imports_script.py checks them
# against the replies of record_event.lua itself).
_LETTERS = {
    "d": Outcome.DUPLICATE,
    "r": Outcome.REUSED,
    "e": Outcome.IGNORED_ERASED,
    "o": Outcome.IGNORED_OLDER,
    "c": Outcome.CHANGED,
    "a": Outcome.APPLIED,
}
# Keyed by the reply as it comes: bytes, or str from a client that decodes replies.
_OUTCOME: dict[bytes | str, str] = {}
for _letter, _name in _LETTERS.items():
    _OUTCOME[_letter] = _OUTCOME[_letter.encode()] = _name
