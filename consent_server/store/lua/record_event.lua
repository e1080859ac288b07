-- Record an opt-out or opt-in in one atomic step.
-- KEYS[1] the recipient's record bucket, KEYS[2] the partition's history bucket prefix
-- (layout.lua, store/keys.py), KEYS[3] the recipient's suppression tombstone, KEYS[4]
-- its message index (same hash tag).
-- ARGV: event_id, action ("in"|"out"), scope field, topic, source, evidence,
--       occurred_at ms, principal.
-- KEYS[5] the tenant's change feed stream of the partition, KEYS[6] its trim mark
-- (same hash tag); ARGV[9] tenant, ARGV[10] channel, ARGV[11] address, ARGV[12] the
-- feed's max length: an applied event is appended to the feed in this same step
-- (docs/feed.md), so a watcher sees every applied change exactly where it happened.
-- ARGV[13] the recipient's descriptor (field, bucket, buckets: keys.descriptor).
-- Inbound replies (HandleInboundMessage) also pass KEYS[7] the partition's outbox
-- stream and KEYS[8] a new message's status hash (same hash tag), and ARGV[14]
-- message id, ARGV[15] tenant, ARGV[16] channel, ARGV[17] address, ARGV[18]
-- confirmation body json, ARGV[19] message retention s: when the event changes the
-- scope's status (and, for a topic, what the recipient receives), the confirmation is
-- queued in this same step (docs/outbox.md), so it is neither lost nor doubled, and
-- a repeated STOP queues nothing.
-- An event dated at or before the recipient's erasure (the tombstone's "at") writes
-- nothing under the recipient: no state, no history (their names hold the address),
-- no confirmation. It only counts on the tombstone ("ign"), keeps a late opt-out there
-- as a suppression (never lost), and answers what a check would say now. The tombstone's scope records compete with live ones as in send.lua,
-- so only an opt-in dated after the erasure lifts a suppression.
-- Returns {0 new | 1 replay | 2 id reused for another change | 3 before the erasure,
--          "applied|changed|status|revision|recorded_ms|action:topic",
--          id of the confirmation queued by this event or ""}.
--! include layout.lua
local tomb, index = KEYS[3], KEYS[4]
local event_id, action, field, topic = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local source, evidence, occurred, principal = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local rc = recipient(KEYS[1], KEYS[2], ARGV[13])
local count = main_of(rc)

-- Idempotency: the first outcome of an event id is returned, nothing is written.
-- The same id for a different change (another action or topic) is a caller bug that
-- would silently drop an opt-out or opt-in: report it instead. The id is looked up
-- among the recipient's last WINDOW (32) history events (keys.IDEMPOTENCY_WINDOW).
local fingerprint = action .. ':' .. topic
local seen_event, seen_seq = find_event(rc, count, event_id)
if seen_event then
  local seen = outcome_of(seen_event, seen_seq)
  if seen_event.action .. ':' .. seen_event.topic ~= fingerprint then
    return {2, seen, ''}
  end
  return {1, seen, seen_event.conf}
end

local function parse(rec)
  if not rec then return nil end
  local st, o, r = string.match(rec, '^(%a+)|(%d+)|(%d+)|')
  return {st, tonumber(o), tonumber(r)}
end
local function newer(a, b)  -- a, b parsed; the one that decides
  if a and (not b or a[2] > b[2] or (a[2] == b[2] and a[3] > b[3])) then return a end
  return b
end
local function decider(topic_rec, all_rec)
  return newer(topic_rec, all_rec)
end
-- A scope's record: the newer of the live one and the tombstone's.
local function record(f)
  return newer(parse(get_record(rc, f) or nil), parse(redis.call('HGET', tomb, f)))
end

local t = redis.call('TIME')
local recorded = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local recorded_s = string.format('%d', recorded)

local erased_at = tonumber(redis.call('HGET', tomb, 'at') or '')
if not erased_at then
  -- A tombstone written before the erasure time was kept: its records are dated at it.
  local old = redis.call('HGETALL', tomb)
  for i = 1, #old, 2 do
    local rec = parse(old[i + 1])
    if string.sub(old[i], 1, 2) == 's:' and rec and (not erased_at or rec[2] > erased_at) then
      erased_at = rec[2]
    end
  end
end
if erased_at and tonumber(occurred) <= erased_at then
  redis.call('HINCRBY', tomb, 'ign', 1)
  -- A late opt-out (sent before the erasure, delivered after it) is not lost: the
  -- tombstone keeps it as a suppression of its scope, dated at the erasure, holding no
  -- address and no event id (a wamid encodes the number). Only an opt-in dated after
  -- the erasure lifts it, as for the scopes the erasure itself suppressed.
  if action == 'out' then
    local kept = parse(redis.call('HGET', tomb, field))
    if not kept or kept[1] ~= 'out' then
      redis.call('HSET', tomb, field, 'out|' .. string.format('%d', erased_at)
        .. '|0|erasure|' .. (redis.call('HGET', tomb, 'id') or ''))
    end
  end
  local deciding = record('s:*')
  if field ~= 's:*' then deciding = decider(record(field), deciding) end
  local status = 'none'
  if deciding then status = deciding[1] end
  local rev = string.format('%d', count)
  return {3, '0|0|' .. status .. '|' .. rev .. '|' .. recorded_s .. '|' .. fingerprint, ''}
end

count = count + 1
local rev = string.format('%d', count)

-- The event applies when it is not older than the scope's record. Its revision
-- is higher than any before it, so (occurred_at, revision) ordering reduces to
-- occurred_at >= current occurred_at.
local applied, changed, status = 1, 1, action
local before = record(field)
if before then
  if tonumber(occurred) < before[2] then
    applied, changed, status = 0, 0, before[1]
  elseif before[1] == action then
    changed = 0
  end
end
if applied == 1 then
  set_record(rc, count, field, pack_record(action, occurred, count, source, event_id))
else
  local _, all = main_of(rc)
  set_main(rc, count, all)
end

-- The change feed: applied events only, trimmed to its max length. The id of the last
-- entry trimmed is kept (the mark), so a reader resuming before it is told it missed
-- entries (OUT_OF_RANGE) instead of silently skipping them. The history entry names
-- the feed entry, so an erasure removes it with the history (forget.lua).
local feed_id = ''
if applied == 1 then
  local feed, mark, maxlen = KEYS[5], KEYS[6], tonumber(ARGV[12])
  local len = redis.call('XLEN', feed)
  if len >= maxlen then
    local old = redis.call('XRANGE', feed, '-', '+', 'COUNT', len - maxlen + 1)
    if #old > 0 then redis.call('SET', mark, old[#old][1]) end
  end
  feed_id = redis.call('XADD', feed, 'MAXLEN', maxlen, '*',
    'k', 'change', 'tn', ARGV[9], 'ch', ARGV[10], 'addr', ARGV[11], 'a', action,
    't', topic, 's', source, 'o', occurred, 'r', string.format('%d', recorded),
    'rev', rev, 'id', event_id, 'chg', changed, 'p', principal)
end

local event = {action = action, applied = applied, changed = changed, status = status,
  topic = topic, source = source, occurred = occurred, recorded = recorded, id = event_id,
  principal = principal, feed = feed_id, conf = '', evidence = evidence}

local outcome = applied .. '|' .. changed .. '|' .. status .. '|' .. rev .. '|'
  .. recorded_s .. '|' .. fingerprint

-- Inbound events confirm when they change what the recipient receives (the decision rule
-- decides each topic by the newer of its record and the all-topics record):
-- "Stop promotions" after STOP changes nothing (the newer STOP already blocks
-- marketing), while STOP after a newer marketing opt-in does (marketing was allowed).
local function differs(a, b)
  return not a or not b or a[1] ~= b[1]
end
local effective = 0
if #KEYS >= 8 and applied == 1 then
  local after = {action, tonumber(occurred), count}
  if topic ~= '' then
    local all = record('s:*')
    if differs(decider(before, all), decider(after, all)) then effective = 1 end
  elseif differs(before, after) then
    effective = 1
  else
    -- The all-topics status stays; some topic may still flip (a newer topic record
    -- of the other status was deciding it before this event). Topics of the
    -- tombstone count like live ones.
    local function flips(f)
      if f == 's:*' then return false end
      local rec = record(f)
      return differs(decider(rec, before), decider(rec, after))
    end
    for f, _ in pairs(all_records(rc)) do
      if effective == 0 and flips(f) then effective = 1 end
    end
    if effective == 0 then
      for _, f in ipairs(redis.call('HKEYS', tomb)) do
        if effective == 0 and string.sub(f, 1, 2) == 's:' and flips(f) then effective = 1 end
      end
    end
  end
end

local confirmation = ''
if effective == 1 then
  local outbox, msg, message_id = KEYS[7], KEYS[8], ARGV[14]
  local now = recorded_s
  local eid = redis.call('XADD', outbox, '*',
    'id', message_id, 'tenant', ARGV[15], 'ch', ARGV[16], 'addr', ARGV[17], 'topic', '',
    'body', ARGV[18], 'not_after', '0', 'meta', '{}', 'rev', rev, 'at', now,
    'purpose', 'confirmation')
  redis.call('HSET', msg, 'st', 'accepted', 'ch', ARGV[16], 'addr', ARGV[17], 'topic', '',
    'at', now, 'up', now, 'att', 0, 'err', '', 'pid', '', 'eid', eid)
  redis.call('EXPIRE', msg, ARGV[19])
  -- Indexed like a send, so an erasure finds it (see send.lua).
  redis.call('ZADD', index, now, message_id)
  redis.call('PEXPIRE', index, string.format('%d', 2000 * tonumber(ARGV[19])))
  confirmation = message_id
end
-- The history event (it also keeps the event id and outcome for idempotency).
event.conf = confirmation
put_event(rc, count, event)
return {0, outcome, confirmation}
