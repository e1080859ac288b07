-- Pages of recipients' histories, newest first (read-only).
-- KEYS: pairs (the recipient's record bucket, the partition's history bucket prefix),
-- all of one partition (one hash tag).
-- ARGV: per pair, the recipient's descriptor (keys.descriptor), the newest revision to
-- return ("0": the newest there is), how many events at most ("0": all).
-- Returns per pair a flat list: revision, packed event (layout.lua's pack_event), ...
-- The event count in the record says which revisions exist, so a page is one HGET per
-- event (two for an event longer than 64 bytes).
--! include layout.lua
local replies = {}
for i = 1, #KEYS, 2 do
  local a = 3 * (i - 1) / 2
  local rc = recipient(KEYS[i], KEYS[i + 1], ARGV[a + 1])
  local count = main_of(rc)
  local top, limit = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if top == 0 or top > count then top = count end
  local out = {}
  local seq = top
  while seq >= 1 and (limit == 0 or #out < 2 * limit) do
    local key, field = event_key(rc, seq)
    local v = get_long(key, field)
    if v then
      out[#out + 1] = seq
      out[#out + 1] = v
    end
    seq = seq - 1
  end
  replies[#replies + 1] = out
end
return replies
