-- Take or renew the dispatch lease of one change webhook endpoint.
-- KEYS[1] the lease key; ARGV[1] the owner (a dispatcher's name); ARGV[2] ttl in ms.
-- Returns 1 when the caller holds the lease now (taken, or renewed), else 0: one
-- dispatcher per endpoint, so two worker processes never deliver the same change
-- concurrently; a dispatcher that dies loses its lease after the ttl.
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
