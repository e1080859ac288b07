-- Record an opt-out or opt-in (SPEC §4) in one atomic step.
-- KEYS[1] state hash, KEYS[2] history stream (same hash tag).
-- ARGV: event_id, action ("in"|"out"), scope field, topic, source, evidence,
--       occurred_at ms, principal.
-- Returns {0 new | 1 replay | 2 id reused for another change,
--          "applied|changed|status|revision|recorded_ms|action:topic"}.
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
    return {2, seen}
  end
  return {1, seen}
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
return {0, outcome}
