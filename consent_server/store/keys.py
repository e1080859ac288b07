"""The Redis key schema.

Every key of a (tenant, recipient) carries the hash tag of the recipient's
partition, ``{cpNN}`` below, and so does the outbox stream of that partition: a send
script can decide and enqueue atomically even on Redis Cluster (a script may
only touch keys of one slot). The partition is a fixed function of (tenant,
channel, address), so each recipient has exactly one hash tag.

The layout (how many partitions, which tags) is recorded in ``ca:meta`` when a store
is created and never changes (store/schema.py reads it and calls configure()). A new
store's tags are placed by slot (spread_tags: 128 partitions split 43/43/42 over three
masters); a store created before counts were recorded keeps the 16 legacy tags
``{cp00}``..``{cp15}``.

    ca:{cpNN}:<tenant>:r:<b>                     hash: bucket of current records (schema 2/3)
    ca:{cpNN}:<tenant>:h:<b>                     hash: bucket of history events (schema 2/3)
    ca:{cpNN}:<tenant>:<channel>:<address>:i:<k> string: send idempotency key -> message
    ca:{cpNN}:<tenant>:m:<message_id>            hash: message status
    ca:{cpNN}:outbox                             stream: accepted messages to deliver
    ca:{cpNN}:retry                              zset: message ids waiting to retry, by due ms
    ca:{cpNN}:retry:data                         hash: message id -> outbox entry to re-queue
    ca:{cpNN}:<tenant>:feed                      stream: the tenant's change feed (partition)
    ca:{cpNN}:<tenant>:feed:trim                 string: id of the last feed entry trimmed
    ca:tenant:<tenant>:settings                  hash: tenant settings + registry entry (t:*)
    ca:tenants                                   zset: the tenant registry's ids
    ca:tenant:<tenant>:whatsapp                  hash: WhatsApp webhook verify token, app secret,
                                                 phone number ids, WABA id
    ca:edge:wa:pnid                              hash: WhatsApp phone number id -> its one tenant
    ca:edge:wa:vt                                hash: sha256(verify token) -> tenant (app URL)
    ca:{wadl:<tenant>}:items                     hash: dead-letter id -> unapplied item (JSON)
    ca:{wadl:<tenant>}:order                     zset: dead-letter ids by receive time (ms)
    ca:edge:link_secret                          string: the generated consent-link secret
    ca:tenant:<tenant>:providers                 hash: channel (or "*") -> provider config
    ca:tenant:<tenant>:pid:<provider message id> string: -> message id (delivery receipts)
    ca:tenant:<tenant>:change-webhooks           hash: endpoint name -> change webhook (JSON)
    ca:change-webhooks                           set: every "<tenant>/<name>" (dispatcher)
    ca:{cw:<tenant>/<name>}:cursor               hash: partition -> last feed entry handled
    ca:{cw:<tenant>/<name>}:log                  list: bounded delivery log (JSON, newest first)
    ca:{cw:<tenant>/<name>}:dead                 list: bounded dead letters (JSON, newest first)
    ca:{cw:<tenant>/<name>}:lease                string: the dispatcher holding the endpoint

Schema 2 (compact storage): many recipients share one listpack-encoded hash bucket.
A recipient's bucket b is a fixed function of (tenant, channel, address), independent
of its partition; BUCKETS_PER_PARTITION buckets per partition and tenant. Its field
name is ``<channel letter><address>`` ("rfield", e.g. ``s+14155550100``):

    record bucket ca:{cpNN}:<tenant>:r:<b>
      <rfield>            "<event count, base 36>" [";" <all-topics record, packed>]
      <rfield>\x1f<topic> <the topic's record, packed>
    history bucket ca:{cpNN}:<tenant>:h:<(b + (seq - 1) // 8) % BUCKETS_PER_PARTITION>
      <rfield>\x1f<seq>   one event, packed (seq = the event's revision, 1, 2, ...)
      <rfield>\x1f<seq>\x1f<n>  its n-th 64-byte continuation when longer than 64 bytes

A packed record is ``<i|o><occurred ms, base 36>,<revision, base 36>,<source>,<event
id>`` (source as one letter: store/lua/layout.lua); the scripts unpack it to the round-1
form ``status|occurred_ms|revision|source|event_id`` that the decision rule and
records.parse_record read. A packed event is its fields joined by \x1f (layout.lua).
Every value is cut to at most 64 bytes and every bucket stays small (a recipient's
events spread over consecutive history buckets, 8 per bucket), so each bucket keeps
Redis's default listpack encoding (hash-max-listpack-entries 128, -value 64) without a
CONFIG SET: ~50 B per record and ~90 B per event instead of a ~4.7 KB stream and a
~280 B hash per recipient (docs/benchmarks.md). A bucket grows past 128 fields only
beyond ~10 M recipients per tenant (BUCKETS_PER_PARTITION x PARTITIONS x ~100); it
then turns into a regular hash: still correct, less compact. Addresses longer than
~60 bytes (long e-mail addresses) do the same to their own bucket.

Event-id idempotency: a replayed event id is recognised among the recipient's last
IDEMPOTENCY_WINDOW events (its history holds each event's id and outcome); nothing else
keeps event ids, so they cost no memory of their own (docs/guarantees.md).

    ca:meta                                      hash: schema (2 legacy tags, 3 recorded
                                                 layout), partitions, tags, buckets
    ca:{cw:<tenant>/<name>}:redrive              list: dead letters' event ids to send again
"""

from __future__ import annotations

import re
import secrets
import time
import zlib
from collections.abc import Sequence

from consent_server.domain.errors import StoreUnavailable
from consent_server.domain.model import Channel, Recipient

# The layout in use: set once per process by configure() (store/schema.py calls it with
# what ca:meta records) before anything reads or writes a partition key. Until then it
# is the legacy layout, which is also what every store created before partition counts
# were recorded has.
LEGACY_PARTITIONS = 16
MAX_PARTITIONS = 256  # message ids name the partition in two hex digits
PARTITIONS = LEGACY_PARTITIONS
SPREAD = False  # False: tags {cp00}..{cp15}; True: tags placed by slot (spread_tags)
# Schema 2: record and history buckets per partition and tenant (never changes once
# data exists; recorded in ca:meta).
TOTAL_BUCKETS = 131_072  # per tenant: ~8 recipients a bucket at 1 M, ~80 at 10 M
BUCKETS_PER_PARTITION = max(1, TOTAL_BUCKETS // PARTITIONS)
HISTORY_SPREAD = 8  # consecutive events of a recipient per history bucket
IDEMPOTENCY_WINDOW = 32  # a replay is recognised among the recipient's last 32 events
SCHEMA = 3  # a new store: the compact layout with a recorded partition layout
META = "ca:meta"
_CHANNEL_VALUE = {c: c.value for c in Channel}
_CHANNEL_LETTER = {"whatsapp": "w", "sms": "s", "email": "e", "rcs": "r", "voice": "v"}
CHANNEL_OF_LETTER = {v: k for k, v in _CHANNEL_LETTER.items()}
MESSAGE_ID_RE = re.compile(r"^m[0-9a-f]{30}$")
_SLOTS = 16_384


def legacy_tags() -> tuple[str, ...]:
    """The hash tags of the legacy 16-partition layout: ``{cp00}``..``{cp15}``. Their 16
    slots are wherever CRC16 puts them (on 3 masters they split 4/8/4)."""
    return tuple(f"{{cp{part:02d}}}" for part in range(LEGACY_PARTITIONS))


def spread_tags(partitions: int) -> tuple[str, ...]:
    """Hash tags that spread ``partitions`` evenly over any contiguous division of the
    cluster's slots: partition p's tag ``{cp<p><n>}`` (hex) is the first whose slot lies
    in the p-th 1/partitions share of the 16,384 slots. Redis Cluster gives each master a
    contiguous range, so each master holds its share of the partitions to within two."""
    from redis.crc import key_slot  # pure function of redis-py; kept out of import time

    tags = []
    for part in range(partitions):
        low, high = part * _SLOTS // partitions, (part + 1) * _SLOTS // partitions
        n = 0
        while True:
            candidate = f"{{cp{part:02x}{n:04x}}}"
            if low <= key_slot(candidate.encode()) < high:
                tags.append(candidate)
                break
            n += 1
    return tuple(tags)


class LayoutUnknown(StoreUnavailable):
    """A partition key was asked for before the store's recorded layout was read (Redis
    has not answered yet): nothing may be read or written under a guessed layout."""


_PENDING = False  # True between await_layout() and configure()


def await_layout() -> None:
    """Refuse every partition key (LayoutUnknown) until configure() runs: a server
    calls this before it first asks Redis for the layout, so a call that arrives
    while Redis is unreachable can never write under the wrong partition count."""
    global _PENDING
    _PENDING = True


def require_layout() -> None:
    """Raise LayoutUnknown while the layout is still being read (the health probe)."""
    if _PENDING:
        raise LayoutUnknown("the store's partition layout has not been read from Redis yet")


def configure(partitions: int, *, spread: bool) -> None:
    """Use the layout a store records (store/schema.py): its partition count and tags.
    Called before the process reads or writes any partition key."""
    global PARTITIONS, SPREAD, BUCKETS_PER_PARTITION, _TAGS, _PART_OF_TAG, _PENDING
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}, not {partitions}")
    if not spread and partitions != LEGACY_PARTITIONS:
        raise ValueError(f"the legacy layout has {LEGACY_PARTITIONS} partitions")
    PARTITIONS, SPREAD = partitions, spread
    BUCKETS_PER_PARTITION = buckets_for(partitions)
    _TAGS = spread_tags(partitions) if spread else legacy_tags()
    _PART_OF_TAG = {t: p for p, t in enumerate(_TAGS)}
    _PENDING = False


def partitions() -> int:
    """The partition count of the layout in use; LayoutUnknown while it is being read.
    Every caller that needs the count (not just a key) asks here, so none can act on
    the legacy default before the store's layout is known."""
    if _PENDING:  # checked here first: this runs for every key of every call
        require_layout()
    return PARTITIONS


def buckets_for(partitions: int) -> int:
    """Record (and history) buckets per partition and tenant for a partition count."""
    return max(1, TOTAL_BUCKETS // partitions)


def _crc(tenant_id: str, recipient: Recipient) -> int:
    """The CRC a recipient's partition (low bits) and record bucket (higher bits) come
    from. The channel's value from a dict: an enum's .value is a descriptor call."""
    key = f"{tenant_id}\x00{_CHANNEL_VALUE[recipient.channel]}\x00{recipient.address}"
    return zlib.crc32(key.encode())


def partition(tenant_id: str, recipient: Recipient) -> int:
    """The recipient's partition: stable, spread evenly over the partitions."""
    return _crc(tenant_id, recipient) % partitions()


def placement(tenant_id: str, recipient: Recipient) -> tuple[int, int]:
    """(partition, record bucket) of a recipient from one CRC: what partition() and
    bucket() return, for a caller that needs both."""
    crc = _crc(tenant_id, recipient)
    return crc % partitions(), (crc >> 10) % BUCKETS_PER_PARTITION


def by_partition(tenant_id: str, recipients: Sequence[Recipient]) -> dict[int, list[int]]:
    """The positions of ``recipients`` grouped by partition, in request order within
    each: every multi-recipient read or write makes one call per group (a script may
    only touch keys of one slot) and puts the replies back at these positions."""
    groups: dict[int, list[int]] = {}
    for n, rcpt in enumerate(recipients):
        groups.setdefault(partition(tenant_id, rcpt), []).append(n)
    return groups


_TAGS = legacy_tags()
_PART_OF_TAG = {t: p for p, t in enumerate(_TAGS)}


def tag(part: int) -> str:
    """The hash tag of a partition (every partition key is built from one)."""
    if _PENDING:
        require_layout()
    return _TAGS[part]


def partition_of_key(key: str) -> int | None:
    """The partition whose hash tag a key carries (``ca:{tag}:...``), or None."""
    end = key.find("}")
    return _PART_OF_TAG.get(key[3 : end + 1]) if key.startswith("ca:{") and end > 0 else None


def tag_glob() -> str:
    """A SCAN pattern piece matching exactly the partition tags of the layout in use."""
    return "{cp" + "?" * (len(_TAGS[0]) - 4) + "}"


def recipient_base(tenant_id: str, recipient: Recipient) -> str:
    """The common prefix of a recipient's keys."""
    return partition_base(partition(tenant_id, recipient), tenant_id, recipient)


def partition_base(part: int, tenant_id: str, recipient: Recipient) -> str:
    """recipient_base when the caller already knows the recipient's partition."""
    return f"ca:{tag(part)}:{tenant_id}:{recipient.channel.value}:{recipient.address}"


def state(base: str) -> str:
    """The recipient's round-1 state hash (schema 1; only ``consentctl migrate`` reads it)."""
    return base + ":s"


def history(base: str) -> str:
    """The recipient's round-1 history stream (schema 1; ``consentctl migrate``)."""
    return base + ":h"


def rfield(recipient: Recipient) -> str:
    """The recipient's field name in its record and history buckets."""
    return _CHANNEL_LETTER[recipient.channel.value] + recipient.address


def channel_letter(channel: str) -> str:
    """The letter a channel's recipients' field names start with (rfield)."""
    return _CHANNEL_LETTER[channel]


def bucket(tenant_id: str, recipient: Recipient) -> int:
    """The recipient's record bucket within its partition: bits of the same CRC above
    those the partition uses, so buckets fill evenly in every partition."""
    return (_crc(tenant_id, recipient) >> 10) % BUCKETS_PER_PARTITION


def record_bucket(part: int, tenant_id: str, b: int) -> str:
    """A record bucket."""
    return f"{record_bucket_prefix(part, tenant_id)}{b:x}"


def record_bucket_prefix(part: int, tenant_id: str) -> str:
    """What every record bucket of a tenant's partition is named with (then the
    bucket's number in hex)."""
    return f"ca:{tag(part)}:{tenant_id}:r:"


def history_prefix(part: int, tenant_id: str) -> str:
    """The common prefix of a tenant's history buckets in a partition (the scripts add
    the bucket number)."""
    return f"ca:{tag(part)}:{tenant_id}:h:"


def history_bucket(part: int, tenant_id: str, b: int, seq: int) -> str:
    """The history bucket holding a recipient's event ``seq`` (1, 2, ...)."""
    hb = (b + (seq - 1) // HISTORY_SPREAD) % BUCKETS_PER_PARTITION
    return f"{history_prefix(part, tenant_id)}{hb:x}"


def descriptor(recipient: Recipient, b: int) -> str:
    """What a script needs to find a recipient in the buckets: field, bucket, buckets."""
    return f"{rfield(recipient)}\x1f{b}\x1f{BUCKETS_PER_PARTITION}"


def layout(tenant_id: str, recipient: Recipient, part: int | None = None) -> tuple[str, str, str]:
    """(record bucket, history prefix, descriptor) of a recipient: a script's KEYS[1],
    KEYS[2] (same hash tag, so the script stays on one slot) and its descriptor ARGV."""
    if part is None:
        part, b = placement(tenant_id, recipient)
    else:
        b = bucket(tenant_id, recipient)
    return (
        record_bucket(part, tenant_id, b),
        history_prefix(part, tenant_id),
        descriptor(recipient, b),
    )


def idempotency(base: str, key: str) -> str:
    """A send idempotency key of the recipient."""
    return f"{base}:i:{key}"


def outbox(part: int) -> str:
    """The outbox stream of a partition."""
    return f"ca:{tag(part)}:outbox"


def feed(tenant_id: str, part: int) -> str:
    """A tenant's change feed stream in a partition (WatchConsentEvents reads it)."""
    return f"ca:{tag(part)}:{tenant_id}:feed"


def feed_mark(tenant_id: str, part: int) -> str:
    """The id of the last entry trimmed from a tenant's feed stream in a partition."""
    return f"ca:{tag(part)}:{tenant_id}:feed:trim"


def new_message_id(part: int) -> str:
    """A new message id that names its partition: m<pp><time ms><random>."""
    return f"m{part:02x}{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def message_partition(message_id: str) -> int | None:
    """The partition a message id names, or None when it is not one of ours."""
    if not MESSAGE_ID_RE.match(message_id):
        return None
    part = int(message_id[1:3], 16)
    return part if part < partitions() else None


def message(tenant_id: str, part: int, message_id: str) -> str:
    """A message's status hash; tenant-scoped, so another tenant's id is not found."""
    return f"ca:{tag(part)}:{tenant_id}:m:{message_id}"


def tenant_settings(tenant_id: str) -> str:
    """A tenant's settings hash."""
    return f"ca:tenant:{tenant_id}:settings"


def scope_field(topic: str) -> str:
    """The state-hash field holding a scope's record ("" = all topics)."""
    return "s:" + (topic or "*")


# -- security: API keys, rate limits, erasure ---------------------------------------
#
#    ca:{ak:<key_id>}:key                         hash: an API key (tenant, role, hash...)
#    ca:{ak:<key_id>}:rl                          hash: the key's token bucket
#    ca:akidx:<tenant>                            zset: a tenant's key ids by creation ms
#    ca:tenant:<tenant>:erasure-secret            string: the tenant's tombstone HMAC secret
#    ca:{cpNN}:<tenant>:x:<channel>:<hmac>        hash: suppression tombstone, scope records
#    ca:{cpNN}:<tenant>:erasures                  stream: the partition's erasure log
#    ca:{cpNN}:<tenant>:q:<channel>:<hmac>        zset: the recipient's message ids and
#                                                 "i:<idempotency key>", by acceptance ms
#
# A key and its bucket share a hash tag so one script authenticates and rate-limits;
# different keys land on different cluster slots. A tombstone and the erasure log
# carry the recipient's partition tag, so send.lua and forget.lua can use them.


def api_key(key_id: str) -> str:
    """An API key's record."""
    return f"ca:{{ak:{key_id}}}:key"


def rate_bucket(key_id: str) -> str:
    """An API key's token bucket (same hash tag as the record)."""
    return f"ca:{{ak:{key_id}}}:rl"


def api_key_index(tenant_id: str) -> str:
    """A tenant's key ids, scored by creation time."""
    return f"ca:akidx:{tenant_id}"


def erasure_secret(tenant_id: str) -> str:
    """The tenant's secret for tombstone hashes."""
    return f"ca:tenant:{tenant_id}:erasure-secret"


def tombstone(tenant_id: str, recipient: Recipient, digest: str, *, part: int | None = None) -> str:
    """A recipient's suppression tombstone: named by a keyed hash, never by the address.
    ``part``: the recipient's partition when the caller already knows it."""
    if part is None:
        part = partition(tenant_id, recipient)
    return f"{tombstone_prefix(part, tenant_id)}{recipient.channel.value}:{digest}"


def tombstone_prefix(part: int, tenant_id: str) -> str:
    """What every tombstone key of a tenant's partition starts with (then
    ``<channel>:<digest>``)."""
    return f"ca:{tag(part)}:{tenant_id}:x:"


def message_index(
    tenant_id: str, recipient: Recipient, digest: str, *, part: int | None = None
) -> str:
    """The recipient's message index: every message (and send idempotency key) accepted
    for it, so an erasure finds them in the same atomic step that fences new ones.
    Named by the tombstone's keyed hash: the index itself holds no address."""
    if part is None:
        part = partition(tenant_id, recipient)
    return f"ca:{tag(part)}:{tenant_id}:q:{recipient.channel.value}:{digest}"


def message_prefix(tenant_id: str, part: int) -> str:
    """The common prefix of a tenant's message status hashes in a partition."""
    return f"ca:{tag(part)}:{tenant_id}:m:"


def erasure_log(tenant_id: str, part: int) -> str:
    """The erasure log of a tenant's partition."""
    return f"ca:{tag(part)}:{tenant_id}:erasures"


def message_pattern(tenant_id: str, part: int) -> str:
    """A SCAN pattern for every message status hash of a tenant in a partition."""
    return f"{glob_escape(message_prefix(tenant_id, part))}*"


def glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def whatsapp_webhook(tenant_id: str) -> str:
    """A tenant's WhatsApp webhook settings hash (verify_token, app_secret)."""
    return f"ca:tenant:{tenant_id}:whatsapp"


def whatsapp_phone_numbers() -> str:
    """The index of WhatsApp phone number ids: field = phone number id, value = tenant."""
    return "ca:edge:wa:pnid"


def whatsapp_verify_tokens() -> str:
    """Verify tokens in use (field = their SHA-256, value = tenant): the app-level
    handshake accepts any tenant's token without storing it in clear a second time."""
    return "ca:edge:wa:vt"


def dead_letters(tenant_id: str) -> str:
    """A tenant's unapplied WhatsApp notification items (id -> JSON)."""
    return f"ca:{{wadl:{tenant_id}}}:items"


def dead_letter_order(tenant_id: str) -> str:
    """A tenant's dead-letter ids scored by receive time (same hash tag as the items)."""
    return f"ca:{{wadl:{tenant_id}}}:order"


def link_secret() -> str:
    """The deployment-wide consent-link secret, when CONSENT_LINK_SECRET is not set."""
    return "ca:edge:link_secret"


def short_link(code: str) -> str:
    """A short link code: its tenant and the signed token it stands for (expires with it)."""
    return f"ca:sl:{code}"


def short_link_index(base: str) -> str:
    """A recipient's short link codes, under its prefix so that an erasure removes it
    (and so voids every code) with the recipient's other keys."""
    return base + ":sl"


def retry_queue(part: int) -> str:
    """A partition's delivery retries: a sorted set of message ids scored by due time (ms)."""
    return f"ca:{tag(part)}:retry"


def retry_data(part: int) -> str:
    """The outbox entries of a partition's waiting retries (message id -> JSON fields)."""
    return f"ca:{tag(part)}:retry:data"


def tenant_providers(tenant_id: str) -> str:
    """A tenant's delivery provider configuration hash (field = channel value or "*")."""
    return f"ca:tenant:{tenant_id}:providers"


def provider_message(tenant_id: str, provider_message_id: str) -> str:
    """Maps a provider's message id back to ours, so delivery receipts find the message."""
    return f"ca:tenant:{tenant_id}:pid:{provider_message_id}"


# -- tenants ---------------------------------------------------------------------------
#
#    ca:tenant:<tenant>:settings  fields t:at, t:name   the tenant exists (created at ms, name)
#    ca:tenants                                    zset: every tenant id (score 0, by id)
#
# The registry entry lives in the settings hash on purpose: every consent call already
# reads that hash (cached about a second per process), so checking that the tenant
# exists costs no extra round trip. put_settings.lua keeps the t: fields.

TENANT_CREATED_FIELD = "t:at"
TENANT_NAME_FIELD = "t:name"


def tenant_index() -> str:
    """Every tenant id, lexicographically (ListTenants pages by id)."""
    return "ca:tenants"


def tenant_config_pattern(tenant_id: str) -> str:
    """A SCAN pattern for a tenant's configuration keys (settings, webhook, providers...)."""
    return f"{glob_escape(f'ca:tenant:{tenant_id}:')}*"


def tenant_data_pattern(tenant_id: str) -> str:
    """A SCAN pattern for every partition key of a tenant (records, history, tombstones,
    erasure logs, messages, idempotency keys)."""
    return f"ca:{tag_glob()}:{glob_escape(tenant_id)}:*"


# -- change webhooks ---------------------------------------------------------------------


def change_webhooks(tenant_id: str) -> str:
    """The tenant's change webhook endpoints (hash name -> JSON)."""
    return f"ca:tenant:{tenant_id}:change-webhooks"


def change_webhook_index() -> str:
    """Every registered endpoint as "<tenant>/<name>" (the dispatcher's list)."""
    return "ca:change-webhooks"


def change_webhook(tenant_id: str, name: str, part: str) -> str:
    """One endpoint's cursor, log, dead letters or lease (one hash tag per endpoint)."""
    return f"ca:{{cw:{tenant_id}/{name}}}:{part}"
