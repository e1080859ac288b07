-- Record an opt-out or opt-in in one atomic step.
-- KEYS[1] state hash, KEYS[2] history stream (same hash tag).
-- ARGV: event_id, action ("in"|"out"), scope field, topic, source, evidence,
--       occurred_at ms, principal.
-- Inbound replies (HandleInboundMessage) also pass KEYS[3] the partition's outbox
-- stream and KEYS[4] a new message's status hash (same hash tag), and ARGV[9]
-- message id, ARGV[10] tenant, ARGV[11] channel, ARGV[12] address, ARGV[13]
-- confirmation body json, ARGV[14] message retention s: when the event changes the
-- scope's status (and, for a topic, what the recipient receives), the confirmation is
-- queued in this same step (docs/outbox.md), so it is neither lost nor doubled, and
-- a repeated STOP queues nothing.
-- Returns {0 new | 1 replay | 2 id reused for another change,
--          "applied|changed|status|revision|recorded_ms|action:topic",
--          id of the confirmation queued by this event or ""}.
local state, hist = KEYS[1], KEYS[2]
local event_id, action, field, topic = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local source, evidence, occurred, principal = ARGV[5], ARGV[6], ARGV[7], ARGV[8]

-- Idempotency: the first outcome of an event id is returned, nothing is written.
-- The same id for a different change (another action or topic) is a caller bug that
-- would silently drop an opt-out or opt-in: report it instead.
local fingerprint = action .. ':' .. topic
local seen = redis.call('HGET', state, 'e:' .. event_id)
if seen then
  local first = string.match(seen, '|([^|]*)$')
  if first ~= fingerprint then
    return {2, seen, ''}
  end
  return {1, seen, redis.call('HGET', state, 'c:' .. event_id) or ''}
end

local t = redis.call('TIME')
local recorded = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rev = redis.call('HINCRBY', state, 'rev', 1)

-- The event applies when it is not older than the scope's record. Its revision
-- is higher than any before it, so (occurred_at, revision) ordering reduces to
-- occurred_at >= current occurred_at.
local applied, changed, status = 1, 1, action
local cur = redis.call('HGET', state, field)
if cur then
  local cur_status, cur_occurred = string.match(cur, '^(%a+)|(%d+)|')
  if tonumber(occurred) < tonumber(cur_occurred) then
    applied, changed, status = 0, 0, cur_status
  elseif cur_status == action then
    changed = 0
  end
end
if applied == 1 then
  redis.call('HSET', state, field,
    action .. '|' .. occurred .. '|' .. rev .. '|' .. source .. '|' .. event_id)
end

redis.call('XADD', hist, rev .. '-0',
  'a', action, 't', topic, 's', source, 'ev', evidence, 'o', occurred,
  'r', string.format('%d', recorded), 'ap', applied, 'id', event_id, 'p', principal)

local outcome = applied .. '|' .. changed .. '|' .. status .. '|' .. rev .. '|'
  .. string.format('%d', recorded) .. '|' .. fingerprint
redis.call('HSET', state, 'e:' .. event_id, outcome)

-- Inbound events confirm when they change what the recipient receives (the decision rule
-- decides each topic by the newer of its record and the all-topics record):
-- "Stop promotions" after STOP changes nothing (the newer STOP already blocks
-- marketing), while STOP after a newer marketing opt-in does (marketing was allowed).
local function parse(rec)
  if not rec then return nil end
  local st, o, r = string.match(rec, '^(%a+)|(%d+)|(%d+)|')
  return {st, tonumber(o), tonumber(r)}
end
local function decider(topic_rec, all_rec)
  if topic_rec and (not all_rec or topic_rec[2] > all_rec[2]
      or (topic_rec[2] == all_rec[2] and topic_rec[3] > all_rec[3])) then
    return topic_rec
  end
  return all_rec
end
local function differs(a, b)
  return not a or not b or a[1] ~= b[1]
end
local effective = 0
if #KEYS >= 4 and applied == 1 then
  local before = parse(cur)
  local after = {action, tonumber(occurred), rev}
  if topic ~= '' then
    local all = parse(redis.call('HGET', state, 's:*'))
    if differs(decider(before, all), decider(after, all)) then effective = 1 end
  elseif differs(before, after) then
    effective = 1
  else
    -- The all-topics status stays; some topic may still flip (a newer topic record
    -- of the other status was deciding it before this event).
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', state, cursor, 'MATCH', 's:*', 'COUNT', 200)
      cursor = page[1]
      for i = 1, #page[2], 2 do
        if page[2][i] ~= 's:*' and effective == 0 then
          local rec = parse(page[2][i + 1])
          if differs(decider(rec, before), decider(rec, after)) then effective = 1 end
        end
      end
    until cursor == '0' or effective == 1
  end
end

local confirmation = ''
if effective == 1 then
  local outbox, msg, message_id = KEYS[3], KEYS[4], ARGV[9]
  local now = string.format('%d', recorded)
  redis.call('XADD', outbox, '*',
    'id', message_id, 'tenant', ARGV[10], 'ch', ARGV[11], 'addr', ARGV[12], 'topic', '',
    'body', ARGV[13], 'not_after', '0', 'meta', '{}', 'rev', rev, 'at', now,
    'purpose', 'confirmation')
  redis.call('HSET', msg, 'st', 'accepted', 'ch', ARGV[11], 'addr', ARGV[12], 'topic', '',
    'at', now, 'up', now, 'att', 0, 'err', '', 'pid', '')
  redis.call('EXPIRE', msg, ARGV[14])
  redis.call('HSET', state, 'c:' .. event_id, message_id)
  confirmation = message_id
end
return {0, outcome, confirmation}
