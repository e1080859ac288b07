-- Erase a recipient and keep a suppression tombstone, in one atomic step.
-- KEYS[1] the recipient's record bucket, KEYS[2] the partition's history bucket prefix
-- (layout.lua), KEYS[3] tombstone hash, KEYS[4] outbox
-- stream, KEYS[5] erasure log stream, KEYS[6] the partition's delivery retry queue
-- (sorted set), KEYS[7] its parked entries (hash), KEYS[8] the recipient's message
-- index (see send.lua), KEYS[9] the tenant's change feed stream of the partition,
-- KEYS[10] its trim mark, then the send idempotency keys (ARGV[1] of them), then any
-- other key under the recipient's prefix (ARGV[2]; per-recipient data other features
-- add), then message status hashes found by scanning (ARGV[3]); all share the
-- recipient's hash tag.
-- ARGV: those three counts, erasure id, principal, channel, tombstone digest, the
--       tenant's message key prefix in the partition, the feed's max length, the
--       tenant, the recipient's descriptor (keys.descriptor), its key prefix (send
--       idempotency keys live under it), then its outbox entry ids found by scanning.
-- The recipient's earlier change-feed entries (they hold the address) are deleted, and
-- one erasure entry is appended that holds no address: watchers learn of the erasure
-- (its id and channel) without learning whom it concerned.
-- The message index is read here, in the same step: every message accepted before
-- this script ran is in it, including those accepted while the caller was scanning,
-- so none survives deliverable or holding the address. The tombstone keeps the
-- erasure's time ("at"): events dated at or before it change nothing
-- (record_event.lua) and no message accepted at or before it is delivered (claim.lua).
-- Returns {records, events, idempotency entries, messages cancelled, messages erased,
--          other keys, {provider message ids of the messages}, suppressed scope field, ...}.
--! include layout.lua
local tomb, outbox, elog = KEYS[3], KEYS[4], KEYS[5]
local retry_z, retry_h, index = KEYS[6], KEYS[7], KEYS[8]
local n_idem, n_other, n_msg = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local erasure_id, principal, channel, digest = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local msg_prefix = ARGV[8]
local fixed = 10
local unpack = unpack or table.unpack  -- Lua 5.1 (Redis) and later (embedded store)

local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))

local function parse(rec)
  local status, occurred, rev = string.match(rec, '^(%a+)|(%d+)|(%d+)|')
  return status, tonumber(occurred), tonumber(rev)
end

-- The effective record of every scope: the newer (occurred_at, revision) of the
-- live record and an earlier tombstone's.
local rc = recipient(KEYS[1], KEYS[2], ARGV[11])
local effective = {}
local records, idem = 0, 0
local live = all_records(rc)
for f, rec in pairs(live) do
  records = records + 1
  effective[f] = rec
end
local old = redis.call('HGETALL', tomb)
for i = 1, #old, 2 do
  local f, rec = old[i], old[i + 1]
  if string.sub(f, 1, 2) == 's:' then
    local cur = effective[f]
    if not cur then
      effective[f] = rec
    else
      local _, co, cr = parse(cur)
      local _, oo, orv = parse(rec)
      if oo > co or (oo == co and orv > cr) then effective[f] = rec end
    end
  end
end

-- Scopes that end opted out stay suppressed, dated now: only an opt-in that
-- occurs after the erasure is newer than the tombstone. The erasure's time is kept
-- whatever the status, so nothing dated before it applies afterwards.
redis.call('DEL', tomb)
redis.call('HSET', tomb, 'at', now, 'id', erasure_id)
local suppressed = {}
for f, rec in pairs(effective) do
  local status = parse(rec)
  if status == 'out' then
    redis.call('HSET', tomb, f, 'out|' .. now .. '|0|erasure|' .. erasure_id)
    table.insert(suppressed, f)
  end
end

-- The history: every event (and its change-feed entry, which holds the address).
local count = main_of(rc)
local events = 0
local feed, mark, maxlen, tenant = KEYS[9], KEYS[10], tonumber(ARGV[9]), ARGV[10]
for seq = 1, count do
  local e = get_event(rc, seq)
  if e then
    events = events + 1
    if e.feed ~= '' then redis.call('XDEL', feed, e.feed) end
    local key, field = event_key(rc, seq)
    del_long(key, field)
  end
end
-- The records: the main field and every topic's.
redis.call('HDEL', rc[1], rc[3])
for f, _ in pairs(live) do
  if f ~= 's:*' then redis.call('HDEL', rc[1], rc[3] .. US .. string.sub(f, 3)) end
end
local base = ARGV[12]  -- the recipient's key prefix (send idempotency keys)
local gone = {}  -- idempotency keys already deleted
for i = 1, n_idem do
  gone[KEYS[fixed + i]] = true
  idem = idem + redis.call('DEL', KEYS[fixed + i])
end
local other = 0
for i = 1, n_other do
  other = other + redis.call('DEL', KEYS[fixed + n_idem + i])
end

-- The recipient's messages: those the caller's scan found and those of the index.
local messages, seen = {}, {}
for i = 1, n_msg do
  local m = KEYS[fixed + n_idem + n_other + i]
  if not seen[m] then seen[m] = true; table.insert(messages, m) end
end
for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if string.sub(member, 1, 2) == 'i:' then
    local k = base .. ':i:' .. string.sub(member, 3)
    if not gone[k] then
      gone[k] = true
      idem = idem + redis.call('DEL', k)
    end
  else
    local m = msg_prefix .. member
    if not seen[m] then seen[m] = true; table.insert(messages, m) end
  end
end
redis.call('DEL', index)

-- Queued messages are cancelled (a delivery worker skips any status but
-- accepted) and lose their address; past messages' records are deleted.
-- A message parked for a delivery retry keeps a copy of its fields (with the address)
-- in the partition's retry queue: it goes too, as does its outbox entry.
local cancelled, erased = 0, 0
local pids = {}  -- provider message ids: the caller deletes their mappings (no hash tag)
for _, m in ipairs(messages) do
  local message_id = string.match(m, ':m:([^:]+)$')
  if message_id then
    redis.call('ZREM', retry_z, message_id)
    redis.call('HDEL', retry_h, message_id)
  end
  local st, eid, pid = unpack(redis.call('HMGET', m, 'st', 'eid', 'pid'))
  if pid and pid ~= '' then table.insert(pids, pid) end
  if eid and eid ~= '' then
    erased = erased + redis.call('XDEL', outbox, eid)
  end
  if st == 'accepted' then
    redis.call('HSET', m, 'st', 'cancelled', 'err', 'erased', 'addr', '', 'eid', '', 'up', now)
    cancelled = cancelled + 1
  elseif st then
    redis.call('DEL', m)
    erased = erased + 1
  end
end
for i = 13, #ARGV do
  erased = erased + redis.call('XDEL', outbox, ARGV[i])
end

redis.call('XADD', elog, 'MAXLEN', '~', 100000, '*',
  'id', erasure_id, 'at', now, 'p', principal, 'ch', channel, 'x', digest,
  'records', records, 'events', events, 'idem', idem,
  'cancelled', cancelled, 'erased', erased, 'other', other,
  'suppressed', table.concat(suppressed, ','))
local len = redis.call('XLEN', feed)
if len >= maxlen then
  local old = redis.call('XRANGE', feed, '-', '+', 'COUNT', len - maxlen + 1)
  if #old > 0 then redis.call('SET', mark, old[#old][1]) end
end
redis.call('XADD', feed, 'MAXLEN', maxlen, '*',
  'k', 'erasure', 'tn', tenant, 'ch', channel, 'addr', '', 'id', erasure_id, 'r', now,
  'p', principal, 'sup', table.concat(suppressed, ','))
local out = {records, events, idem, cancelled, erased, other, pids}
for _, f in ipairs(suppressed) do table.insert(out, f) end
return out
