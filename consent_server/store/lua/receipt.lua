-- Apply a provider's delivery receipt to a message status.
-- KEYS[1] message status hash.
-- ARGV: receipt ("delivered"|"read"|"failed"), error text.
-- Receipts refine a DELIVERED message only: "failed" turns it FAILED (the provider
-- accepted it but could not deliver), "delivered"/"read" are kept as the receipt
-- ("read" is never downgraded). Returns "applied", "ignored" or "unknown".
local msg = KEYS[1]
local receipt, err = ARGV[1], ARGV[2]
local cur = redis.call('HGET', msg, 'st')
if not cur then
  return 'unknown'
end
if cur ~= 'delivered' then
  return 'ignored'
end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if receipt == 'failed' then
  redis.call('HSET', msg, 'st', 'failed', 'err', err, 'up', now)
  return 'applied'
end
if receipt == 'delivered' and redis.call('HGET', msg, 'rc') == 'read' then
  return 'ignored'
end
redis.call('HSET', msg, 'rc', receipt, 'rc_at', now, 'up', now)
return 'applied'
