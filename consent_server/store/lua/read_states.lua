-- Read the records of many recipients of one partition in one call, with their erasure
-- tombstones. KEYS: pairs (the recipient's record bucket, its tombstone), all with one
-- hash tag (one partition), so this runs on Redis Cluster.
-- ARGV[1]: the topic's scope field ("" for none); then one descriptor per recipient
-- (keys.descriptor).
-- Returns per pair two replies: the live {all-topics record, topic record} and the
-- tombstone's (round-1 record form, layout.lua; nil for none; just the all-topics one
-- when no topic is asked).
-- Why a script rather than a pipeline of HMGETs: the client then sends, and parses
-- the replies of, one command per partition instead of one per recipient, which is
-- where a Python server spent most of a large BatchCheckConsent.
--! include layout.lua
local field = ARGV[1]
local out = {}
for i = 1, #KEYS, 2 do
  local n = (i + 1) / 2
  local d = split(ARGV[n + 1], US)
  local bucket, tomb = KEYS[i], KEYS[i + 1]
  if field == '' then
    local _, all = main_of({bucket, '', d[1]})
    out[i] = {unpack_record(all)}
    out[i + 1] = redis.call('HMGET', tomb, 's:*')
  else
    local v = redis.call('HMGET', bucket, d[1], d[1] .. US .. string.sub(field, 3))
    local all = false
    if v[1] then
      local at = string.find(v[1], ';', 1, true)
      if at then all = string.sub(v[1], at + 1) end
    end
    out[i] = {unpack_record(all), unpack_record(v[2])}
    out[i + 1] = redis.call('HMGET', tomb, 's:*', field)
  end
end
return out
