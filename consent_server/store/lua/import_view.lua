-- What an import needs to know about recipients before it applies their opt-ins
-- (read-only). KEYS: pairs (record bucket, erasure tombstone) of recipients of one
-- partition (one hash tag, so this runs on Redis Cluster).
-- ARGV: per pair, the recipient's descriptor (keys.descriptor), the number n of event
-- ids to look up, then the n ids.
-- Returns per pair {seen: per id, the change its event recorded ("action:topic", the
-- fingerprint record_event.lua compares) or "" when unknown (among the recipient's
-- last 32 events, as record_event.lua's idempotency), its scope records (flat field,
-- round-1 value list), the whole tombstone hash (flat)}.
--! include layout.lua
local out = {}
local a = 1
for i = 1, #KEYS, 2 do
  local rc = recipient(KEYS[i], '', ARGV[a])
  local tomb = KEYS[i + 1]
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  local count = main_of(rc)
  local recent = {}
  if n > 0 and count > 0 then
    -- History is read through its own prefix: the record bucket's name with :h:.
    rc[2] = string.gsub(KEYS[i], ':r:[0-9a-f]+$', ':h:')
    local low = count - WINDOW + 1
    if low < 1 then low = 1 end
    for seq = count, low, -1 do
      local e = get_event(rc, seq)
      if e then recent[e.id] = e.action .. ':' .. e.topic end
    end
  end
  local seen = {}
  for j = 1, n do
    seen[j] = recent[ARGV[a]] or ''
    a = a + 1
  end
  local scopes = {}
  for f, rec in pairs(all_records(rc)) do
    scopes[#scopes + 1] = f
    scopes[#scopes + 1] = rec
  end
  out[#out + 1] = {seen, scopes, redis.call('HGETALL', tomb)}
end
return out
