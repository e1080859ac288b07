-- Read a tenant's change feed of one partition in one atomic step.
-- KEYS[1] the feed stream, KEYS[2] its trim mark (the id of the last entry trimmed).
-- ARGV[1] mode: "read" | "latest" | "oldest"; ARGV[2] position (an entry id);
-- ARGV[3] count.
-- read: {1, mark} when entries after the position were trimmed (the position is before
--       the mark), else {0, entries after the position (up to count)};
-- latest: the id of the newest entry (or the mark, or "0-0");
-- oldest: the mark, or "0-0" (a position before every retained entry).
-- The mark and the entries are read together, so a trim between the two cannot make a
-- reader skip entries silently.
local feed, mark = KEYS[1], KEYS[2]
local mode = ARGV[1]
local trimmed = redis.call('GET', mark)

local function before(a, b)  -- entry id a < entry id b
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

if mode == 'oldest' then
  return trimmed or '0-0'
end
if mode == 'latest' then
  local last = redis.call('XREVRANGE', feed, '+', '-', 'COUNT', 1)
  if #last > 0 then return last[1][1] end
  return trimmed or '0-0'
end
local pos = ARGV[2]
if trimmed and before(pos, trimmed) then
  return {1, trimmed}
end
return {0, redis.call('XRANGE', feed, '(' .. pos, '+', 'COUNT', tonumber(ARGV[3]))}
