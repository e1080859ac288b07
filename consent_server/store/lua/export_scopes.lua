-- The scope records of recipients' state hashes, for an export (read-only). KEYS:
-- keys of one partition (one hash tag) that a SCAN matched; a key that is not a hash
-- (an idempotency key whose name happens to match) answers an empty list.
-- Returns per key a flat field, value list of its s:* fields, read in this one atomic
-- step, so each recipient's records are consistent with each other.
local out = {}
for i = 1, #KEYS do
  local scopes = {}
  if redis.call('TYPE', KEYS[i]).ok == 'hash' then
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', KEYS[i], cursor, 'MATCH', 's:*', 'COUNT', 500)
      cursor = page[1]
      for k = 1, #page[2] do scopes[#scopes + 1] = page[2][k] end
    until cursor == '0'
  end
  out[i] = scopes
end
return out
