-- What an import needs to know about recipients before it applies their opt-ins
-- (read-only). KEYS: pairs (state hash, erasure tombstone) of recipients of one
-- partition (one hash tag, so this runs on Redis Cluster).
-- ARGV: per pair, the number n of event ids to look up, then the n ids.
-- Returns per pair {seen: 1/0 per id, scope fields of the state hash (flat field,
-- value list of every s:* field), the whole tombstone hash (flat)}.
local out = {}
local a = 1
for i = 1, #KEYS, 2 do
  local state, tomb = KEYS[i], KEYS[i + 1]
  local n = tonumber(ARGV[a])
  a = a + 1
  local seen = {}
  for j = 1, n do
    seen[j] = redis.call('HEXISTS', state, 'e:' .. ARGV[a])
    a = a + 1
  end
  local scopes = {}
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', state, cursor, 'MATCH', 's:*', 'COUNT', 500)
    cursor = page[1]
    for k = 1, #page[2] do scopes[#scopes + 1] = page[2][k] end
  until cursor == '0'
  out[#out + 1] = {seen, scopes, redis.call('HGETALL', tomb)}
end
return out
