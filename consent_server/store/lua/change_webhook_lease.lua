-- Take, renew or release the dispatch lease of one change webhook endpoint.
-- KEYS[1] the lease key; ARGV[1] the owner (a dispatcher's name); ARGV[2] ttl in ms,
-- or 0 to release the lease (only when the caller holds it).
-- Returns 1 when the caller holds the lease now (taken, or renewed) or released it,
-- else 0: one dispatcher per endpoint, so two worker processes never deliver the same
-- change concurrently; a dispatcher that dies loses its lease after the ttl, one that
-- stops releases it so its successor starts at once.
local cur = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[2])
if ttl == 0 then
  if cur == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
  return 0
end
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  return 1
end
return 0
