-- Claim an outbox entry for delivery, re-checking consent in the same atomic step
--: a send whose recipient no longer allows it is CANCELLED here and
-- can never reach a provider, because every opt-out writes the same record bucket.
-- KEYS[1] the recipient's record bucket, KEYS[2] message status hash, KEYS[3] outbox stream,
-- KEYS[4] the recipient's suppression tombstone (all with the recipient's hash tag).
-- ARGV: group, stream entry id, purpose ("send"|"confirmation"|""), topic field,
--       policy ("allow"|"require_opt_in"), not_after ms (0 = never), retention s,
--       channel, address, topic, accepted ms (to create a confirmation's missing status),
--       the recipient's descriptor (keys.descriptor).
-- Returns {"go", attempts, now_ms}
--       | {"cancelled", reason} | {"expired"}          (status final, entry acked+deleted)
--         (reason "RECIPIENT_ERASED..." when accepted at or before an erasure)
--       | {"final", state} | {"gone"}                  (nothing to do, entry acked+deleted)
--! include decision.lua
--! include layout.lua

local msg, outbox = KEYS[2], KEYS[3]
local group, entry, purpose, field, policy = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local not_after, retention = tonumber(ARGV[6]), ARGV[7]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_s = string.format('%d', now)

local function done()
  redis.call('XACK', outbox, group, entry)
  redis.call('XDEL', outbox, entry)
end

-- The erasure fence, for every purpose (confirmations included): a message accepted at
-- or before the recipient's erasure is never delivered and loses its address, however
-- it escaped the erasure. A confirmation may go to an opted-out person, never to an
-- erased one.
local erased_at = tonumber(redis.call('HGET', KEYS[4], 'at') or '')
if not erased_at then
  -- A tombstone written before the erasure time was kept: its records are dated at it.
  local old = redis.call('HGETALL', KEYS[4])
  for i = 1, #old, 2 do
    local o = tonumber(string.match(old[i + 1], '^%a+|(%d+)|') or '')
    if string.sub(old[i], 1, 2) == 's:' and o and (not erased_at or o > erased_at) then
      erased_at = o
    end
  end
end
if erased_at then
  local accepted = tonumber(redis.call('HGET', msg, 'at') or ARGV[11]) or 0
  if accepted <= erased_at then
    local st = redis.call('HGET', msg, 'st')
    if st == 'accepted' or (not st and purpose == 'confirmation') then
      redis.call('HSET', msg, 'st', 'cancelled', 'err', 'erased', 'addr', '', 'eid', '',
        'ch', ARGV[8], 'topic', ARGV[10], 'at', string.format('%d', accepted), 'up', now_s)
      redis.call('EXPIRE', msg, retention)
      done()
      return {'cancelled', 'RECIPIENT_ERASED: the recipient was erased after the message was accepted'}
    end
  end
end

local cur = redis.call('HGET', msg, 'st')
if not cur then
  if purpose ~= 'confirmation' then
    -- The status record outlived its retention: the message is long gone.
    done()
    return {'gone'}
  end
  -- A confirmation queued without a status record gets one, so it is tracked too.
  redis.call('HSET', msg, 'st', 'accepted', 'ch', ARGV[8], 'addr', ARGV[9], 'topic', ARGV[10],
    'at', ARGV[11], 'up', now_s, 'att', 0, 'err', '', 'pid', '')
  redis.call('EXPIRE', msg, retention)
  cur = 'accepted'
end
if cur ~= 'accepted' then
  done()
  return {'final', cur}
end

local function finish(st, err)
  redis.call('HSET', msg, 'st', st, 'err', err, 'up', now_s)
  redis.call('EXPIRE', msg, retention)
  done()
end

if purpose ~= 'confirmation' then
  local rc = recipient(KEYS[1], '', ARGV[12])
  -- The decision rule, the same as send.lua's (decision.lua). An erased recipient's
  -- tombstone records compete like live ones: a message accepted while an erasure ran
  -- is still cancelled here.
  local winner, is_topic = decide(
    {get_record(rc, 's:*'), get_record(rc, field)}, redis.call('HMGET', KEYS[4], 's:*', field)
  )
  local scope = 'all topics'
  if is_topic then scope = 'the topic' end
  if winner and winner[1] ~= 'in' then
    local reason = 'RECIPIENT_OPTED_OUT: the recipient opted out of ' .. scope
      .. ' after the message was accepted'
    finish('cancelled', reason)
    return {'cancelled', reason}
  end
  if not winner and policy ~= 'allow' then
    local reason = 'OPT_IN_REQUIRED: the recipient has no opt-in for the topic any more'
    finish('cancelled', reason)
    return {'cancelled', reason}
  end
end

if not_after and not_after > 0 and now > not_after then
  finish('expired', 'not_after passed before the message could be delivered')
  return {'expired'}
end

local att = redis.call('HINCRBY', msg, 'att', 1)
redis.call('HSET', msg, 'up', now_s)
return {'go', att, now_s}
