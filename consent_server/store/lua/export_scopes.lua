-- The current records in record buckets, for an export (read-only). KEYS: record
-- buckets of one partition (one hash tag) that a SCAN matched; a key that is not a
-- hash answers an empty list.
-- Returns per key a flat list: recipient field (keys.rfield), scope field ("s:*" or
-- "s:<topic>"), round-1 record, ... read in this one atomic step, so each recipient's
-- records are consistent with each other.
--! include layout.lua
local out = {}
for i = 1, #KEYS do
  local rows = {}
  if redis.call('TYPE', KEYS[i]).ok == 'hash' then
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', KEYS[i], cursor, 'COUNT', 1000)
      cursor = page[1]
      for k = 1, #page[2], 2 do
        local f, v = page[2][k], page[2][k + 1]
        local at = string.find(f, US, 1, true)
        if at then
          rows[#rows + 1] = string.sub(f, 1, at - 1)
          rows[#rows + 1] = 's:' .. string.sub(f, at + 1)
          rows[#rows + 1] = unpack_record(v)
        else
          local semi = string.find(v, ';', 1, true)
          if semi then
            rows[#rows + 1] = f
            rows[#rows + 1] = 's:*'
            rows[#rows + 1] = unpack_record(string.sub(v, semi + 1))
          end
        end
      end
    until cursor == '0'
  end
  out[i] = rows
end
return out
