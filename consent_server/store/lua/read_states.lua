-- Read the same fields of many hashes in one call (recipients' state hashes and their
-- erasure tombstones). KEYS: hashes all with one hash tag (one partition), so this runs
-- on Redis Cluster.
-- ARGV: the fields to read (the all-topics field, then the topic's field if any).
-- Returns one HMGET reply per key, in KEYS order (a missing field reads as nil).
-- Why a script rather than a pipeline of HMGETs: the client then sends, and parses
-- the replies of, one command per partition instead of one per recipient, which is
-- where a Python server spent most of a large BatchCheckConsent.
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HMGET', KEYS[i], unpack(ARGV))
end
return out
