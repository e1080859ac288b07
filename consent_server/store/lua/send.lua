-- Decide and, if allowed, enqueue in one atomic step, so no
-- message is accepted after an opt-out has been acknowledged.
-- KEYS[1] the recipient's record bucket, KEYS[2] idempotency key, KEYS[3] outbox stream,
-- KEYS[4] message status hash, KEYS[5] suppression tombstone, KEYS[6] the recipient's
-- message index (all with the recipient's hash tag).
-- ARGV: topic field, policy ("allow"|"require_opt_in"), use idempotency ("1"|"0"),
--       idempotency ttl s, message retention s, message_id, tenant, channel,
--       address, topic, body json, not_after ms, metadata json, request fingerprint,
--       idempotency key, the recipient's descriptor (keys.descriptor).
-- An accepted message (and its idempotency key) joins the recipient's index in this
-- same step, so an erasure (forget.lua) finds every message accepted before it.
-- Returns {"duplicate", "message_id|accepted_ms|revision|fingerprint"}
--       | {"conflict", the same} when the key was used for a different message
--       | {"blocked", all-topics record or false, topic record or false}
--       | {"accepted", message_id, accepted_ms, revision}.
--! include decision.lua
--! include layout.lua

local idem, outbox, msg = KEYS[2], KEYS[3], KEYS[4]
local field, policy, use_idem = ARGV[1], ARGV[2], ARGV[3]
local idem_ttl, retention, message_id = ARGV[4], ARGV[5], ARGV[6]

if use_idem == '1' then
  local prev = redis.call('GET', idem)
  if prev then
    if string.match(prev, '|([^|]*)$') ~= ARGV[14] then
      return {'conflict', prev}
    end
    return {'duplicate', prev}
  end
end

local rc = recipient(KEYS[1], '', ARGV[16])
local count = main_of(rc)
local recs = {get_record(rc, 's:*'), get_record(rc, field), string.format('%d', count)}
-- An erased recipient's tombstone records compete like live ones: newer wins.
local winner = decide(recs, redis.call('HMGET', KEYS[5], 's:*', field))
local allowed
if winner then
  allowed = winner[1] == 'in'
else
  allowed = policy == 'allow'
end
if not allowed then
  return {'blocked', recs[1], recs[2]}
end

local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local rev = recs[3] or '0'
local eid = redis.call('XADD', outbox, '*',
  'id', message_id, 'tenant', ARGV[7], 'ch', ARGV[8], 'addr', ARGV[9], 'topic', ARGV[10],
  'body', ARGV[11], 'not_after', ARGV[12], 'meta', ARGV[13], 'rev', rev, 'at', now)
redis.call('HSET', msg, 'st', 'accepted', 'ch', ARGV[8], 'addr', ARGV[9], 'topic', ARGV[10],
  'at', now, 'up', now, 'att', 0, 'err', '', 'pid', '', 'eid', eid)
redis.call('EXPIRE', msg, retention)
local index = KEYS[6]
redis.call('ZADD', index, now, message_id)
if use_idem == '1' then
  redis.call('SET', idem, message_id .. '|' .. now .. '|' .. rev .. '|' .. ARGV[14], 'EX', idem_ttl)
  redis.call('ZADD', index, now, 'i:' .. ARGV[15])
end
-- Entries older than twice the retention have no status record left to erase (an
-- erasure still scans for strays); the index does not grow without bound.
local keep_ms = 2000 * tonumber(retention)
redis.call('ZREMRANGEBYSCORE', index, '-inf',
  '(' .. string.format('%d', tonumber(now) - keep_ms))
redis.call('PEXPIRE', index, string.format('%d', keep_ms))
return {'accepted', message_id, now, rev}
