-- Move a due retry back onto its outbox, once (two workers may race for it).
-- KEYS[1] retry zset, KEYS[2] retry data hash, KEYS[3] outbox stream, KEYS[4] the
-- message's status hash (one hash tag).
-- ARGV: message id, then the outbox entry as field, value, field, value...
-- Returns 1 when re-queued, 0 when another worker already did.
local rq, rdata, outbox = KEYS[1], KEYS[2], KEYS[3]
local unpack = unpack or table.unpack  -- Lua 5.1 (Redis) and later (embedded store)
local id = ARGV[1]
if redis.call('ZREM', rq, id) == 0 then
  return 0
end
redis.call('HDEL', rdata, id)
local eid = redis.call('XADD', outbox, '*', unpack(ARGV, 2))
-- The status names its current outbox entry, so an erasure can delete it.
if redis.call('HEXISTS', KEYS[4], 'st') == 1 then
  redis.call('HSET', KEYS[4], 'eid', eid)
end
return 1
