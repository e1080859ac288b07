-- Record the outcome of a provider call and take the entry off the outbox.
-- KEYS[1] message status hash, KEYS[2] outbox stream, KEYS[3] retry zset,
-- KEYS[4] retry data hash (all with the partition's hash tag).
-- ARGV: group, stream entry id, outcome ("delivered"|"logged"|"failed"|"expired"|"retry"),
--       error text, provider message id, provider name, retention s, message id,
--       retry due ms, retry entry (JSON of the outbox fields).
-- A retry keeps the status ACCEPTED (attempts and last error updated) and parks the
-- entry in the retry zset until it is due; every other outcome is final.
-- Returns {"done"} | {"retry"} | {"stale", state}: the status was already final
-- (another worker finished it after a reclaim), nothing overwritten.
local msg, outbox, rq, rdata = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, entry, outcome, err, pid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local provider, retention, message_id = ARGV[6], ARGV[7], ARGV[8]

local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))

redis.call('XACK', outbox, group, entry)
redis.call('XDEL', outbox, entry)

local cur = redis.call('HGET', msg, 'st')
if cur ~= 'accepted' then
  return {'stale', cur or ''}
end
if outcome == 'retry' then
  redis.call('HSET', msg, 'err', err, 'up', now, 'prov', provider)
  redis.call('ZADD', rq, ARGV[9], message_id)
  redis.call('HSET', rdata, message_id, ARGV[10])
  return {'retry'}
end
redis.call('HSET', msg, 'st', outcome, 'err', err, 'pid', pid, 'prov', provider, 'up', now)
redis.call('EXPIRE', msg, retention)
return {'done'}
