"""The change feed (WatchConsentEvents): resume tokens and the watch loop.

The store keeps one bounded stream per tenant and partition, appended by the same
script that applies a change. A position is one stream entry id per partition; the
resume token is that position, with the tenant, as opaque base64. Every event is
followed by the token just after it, so a client resuming with its last token neither
misses nor repeats anything; a client resuming from an older token sees events again
with the same ``event_id`` (at least once; consumers deduplicate by it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from .errors import ConsentError, InvalidArgument
from .model import Action, Channel, Recipient, Source
from .ports import ChangeFeedStore
from .validation import TENANT_RE

TOKEN_VERSION = 2  # v2: sparse and compressed; v1 (a plain list) is still read
_ENTRY_ID = re.compile(r"^(0|[1-9][0-9]{0,15})-(0|[1-9][0-9]{0,15})$")
_START = "0-0"
# Tokens are small (one id per partition, compressed); anything much longer is not ours.
_MAX_TOKEN = 8192
_MAX_RAW = 64 * 1024  # a token never inflates beyond this (no decompression bombs)
POLL_S = 0.1
READ_COUNT = 200


class FeedTokenExpired(ConsentError):
    """The resume token's position was trimmed away: changes were missed (OUT_OF_RANGE)."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One stored feed entry of a partition (what the store reads)."""

    entry_id: str
    kind: str  # "change" | "erasure"
    tenant_id: str
    channel: Channel | None
    address: str  # "" for an erasure
    action: Action | None
    topic: str
    source: Source | None
    occurred_at_ms: int
    recorded_at_ms: int
    revision: int
    source_event_id: str
    status_changed: bool
    principal: str


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A feed entry as a watcher sees it: with its stable id and the token after it."""

    event_id: str
    entry: FeedEntry
    resume_token: str

    @property
    def recipient(self) -> Recipient | None:
        """The recipient of a consent change; None for an erasure."""
        e = self.entry
        if e.channel is None or not e.address:
            return None
        return Recipient(e.channel, e.address)


class FeedTrimmed(Exception):
    """Raised by a store read: the partition's entries after the position were trimmed."""


def parse_entry_id(entry_id: str) -> tuple[int, int] | None:
    """A stream entry id as (ms, seq), or None when it is not one."""
    m = _ENTRY_ID.match(entry_id)
    return (int(m.group(1)), int(m.group(2))) if m else None


def encode_token(tenant_id: str, positions: Sequence[str]) -> str:
    """The opaque resume token of ``positions`` (one entry id per partition): only the
    partitions past their start are listed, and the whole is deflated, so a token of a
    store with many partitions stays short."""
    sparse = {str(n): p for n, p in enumerate(positions) if p != _START}
    raw = json.dumps(
        {"v": TOKEN_VERSION, "t": tenant_id, "n": len(positions), "p": sparse},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(zlib.compress(raw.encode(), 9)).decode().rstrip("=")


def _inflate(packed: bytes) -> bytes:
    """A v2 token's JSON; a v1 token is plain JSON (it starts with "{")."""
    if packed[:1] == b"{":
        return packed
    inflater = zlib.decompressobj()
    raw = inflater.decompress(packed, _MAX_RAW)
    if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise ValueError("token too large, truncated or followed by junk")
    return raw


def decode_token(token: str, tenant_id: str, partitions: int) -> list[str]:
    """The positions of a token; InvalidArgument when it is malformed or of another tenant."""

    def bad(why: str) -> InvalidArgument:
        return InvalidArgument.single("resume_token", why)

    if len(token) > _MAX_TOKEN:
        raise bad("not a resume token of WatchConsentEvents (too long)")
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(_inflate(packed))
    except (binascii.Error, ValueError, zlib.error, RecursionError):
        raise bad("not a resume token of WatchConsentEvents (malformed)") from None
    if not isinstance(data, dict) or data.get("v") not in (1, TOKEN_VERSION):
        raise bad("not a resume token of WatchConsentEvents (unknown version)")
    if data.get("t") != tenant_id:
        raise bad("the resume token belongs to another tenant's feed")
    positions = _positions(data, partitions)
    if positions is None or not all(parse_entry_id(p) is not None for p in positions):
        raise bad("not a resume token of WatchConsentEvents (bad positions)")
    return positions


def _positions(data: dict[str, object], partitions: int) -> list[str] | None:
    """The full position list of a decoded token (v1: a list; v2: count + sparse map)."""
    listed = data.get("p")
    if data.get("v") == 1:
        if not isinstance(listed, list) or len(listed) != partitions:
            return None
        return [p if isinstance(p, str) else "" for p in listed]
    count = data.get("n")
    if type(count) is not int or count != partitions or not isinstance(listed, dict):
        return None
    positions = [_START] * partitions
    for key, pos in listed.items():
        if not (len(key) <= 3 and key.isascii() and key.isdigit() and int(key) < partitions):
            return None
        positions[int(key)] = pos if isinstance(pos, str) else ""
    return positions


def _part_width(partitions: int) -> int:
    # Two digits while they suffice, so the ids of a 16-partition store never change.
    return max(2, len(str(partitions - 1)))


def feed_event_id(part: int, entry_id: str, partitions: int) -> str:
    """The stable id of a feed entry, unique within the tenant: the partition, zero-padded
    to the width ``partitions`` needs, then the stream entry id."""
    return f"{part:0{_part_width(partitions)}d}-{entry_id}"


def split_event_id(event_id: str, partitions: int) -> tuple[int, str] | None:
    """(partition, entry id) of a feed event id such as "07-1796320123990-0" (the
    inverse of feed_event_id), or None when it is not one of ``partitions``'."""
    part, sep, entry_id = event_id.partition("-")
    width = _part_width(partitions)
    ok = sep and len(part) == width and part.isascii() and part.isdigit()
    if not ok or _ENTRY_ID.fullmatch(entry_id) is None:
        return None
    return (int(part), entry_id) if int(part) < partitions else None


class ChangeFeed:
    """WatchConsentEvents on a ChangeFeedStore."""

    def __init__(
        self, store: ChangeFeedStore, *, poll_s: float = POLL_S, read_count: int = READ_COUNT
    ) -> None:
        self._store = store
        self._poll_s = poll_s
        self._count = read_count

    async def start(self, tenant_id: str, resume_token: str, from_oldest: bool) -> list[str]:
        """The starting positions; InvalidArgument / FeedTokenExpired for a bad token."""
        if not TENANT_RE.fullmatch(tenant_id):
            raise InvalidArgument.single("tenant_id", "must match ^[a-z0-9][a-z0-9_-]{0,63}$")
        parts = self._store.partitions
        if resume_token:
            positions = decode_token(resume_token, tenant_id, parts)
            trimmed = await self._store.trimmed_parts(tenant_id, positions)
            if trimmed:
                raise _expired()
            return positions
        if from_oldest:
            return await self._store.oldest(tenant_id)
        return await self._store.latest(tenant_id)

    async def watch(
        self, tenant_id: str, positions: list[str], *, stop: asyncio.Event | None = None
    ) -> AsyncIterator[ChangeEvent]:
        """Every event after ``positions``, as they are applied, until ``stop`` is set
        (or forever). FeedTokenExpired when the reader falls behind the retention."""
        positions = list(positions)
        while stop is None or not stop.is_set():
            try:
                batches = await self._store.read(tenant_id, positions, self._count)
            except FeedTrimmed:
                raise _expired() from None
            got = False
            for part, entries in batches:
                for entry in entries:
                    positions[part] = entry.entry_id
                    # Never cross a tenant, whatever a stream holds.
                    if entry.tenant_id != tenant_id:
                        continue
                    got = True
                    yield ChangeEvent(
                        feed_event_id(part, entry.entry_id, len(positions)),
                        entry,
                        encode_token(tenant_id, positions),
                    )
            if not got:
                await asyncio.sleep(self._poll_s)

    @staticmethod
    def token(tenant_id: str, positions: Sequence[str]) -> str:
        """The resume token of ``positions``."""
        return encode_token(tenant_id, positions)


def _expired() -> FeedTokenExpired:
    return FeedTokenExpired(
        "the resume token is older than the change feed's retention (CONSENT_FEED_MAXLEN "
        "events per partition): changes were missed. Re-export the tenant's records with "
        "ExportConsent and start a new watch without a resume token"
    )


__all__ = [
    "ChangeEvent",
    "ChangeFeed",
    "FeedEntry",
    "FeedTokenExpired",
    "FeedTrimmed",
    "decode_token",
    "encode_token",
    "feed_event_id",
    "parse_entry_id",
    "split_event_id",
]
