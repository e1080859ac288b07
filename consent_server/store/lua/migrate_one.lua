-- Migrate one round-1 (schema 1) recipient to the compact layout in one atomic step.
-- KEYS[1] its round-1 state hash, KEYS[2] its round-1 history stream, KEYS[3] its
-- record bucket, KEYS[4] the partition's history bucket prefix (one hash tag).
-- ARGV[1] the recipient's descriptor (keys.descriptor).
-- Every scope record, the event count and every history event (with its event id,
-- outcome and confirmation id, which round 1 kept in the state hash as e:<id> / c:<id>)
-- are written in the compact form, then the round-1 keys are deleted. Idempotent: a
-- recipient already migrated has no round-1 state hash and is skipped.
-- Returns {1 migrated | 0 nothing to do, records, events}.
--! include layout.lua
local state, hist = KEYS[1], KEYS[2]
if redis.call('EXISTS', state) == 0 then return {0, 0, 0} end
local rc = recipient(KEYS[3], KEYS[4], ARGV[1])
local s = redis.call('HGETALL', state)
local h = {}
for i = 1, #s, 2 do h[s[i]] = s[i + 1] end
local count = tonumber(h['rev'] or '0')
local function packed(rec)
  local st, o, r, src, eid = string.match(rec, '^(%a+)|(%d+)|(%d+)|([^|]*)|(.*)$')
  return pack_record(st, o, r, src, eid)
end
local records = 0
local all = false
for f, v in pairs(h) do
  if string.sub(f, 1, 2) == 's:' then
    records = records + 1
    if f == 's:*' then
      all = packed(v)
    else
      redis.call('HSET', rc[1], rc[3] .. US .. string.sub(f, 3), packed(v))
    end
  end
end
local events = 0
local cursor = '-'
repeat
  local page = redis.call('XRANGE', hist, cursor, '+', 'COUNT', 500)
  for _, entry in ipairs(page) do
    local f = {}
    for j = 1, #entry[2], 2 do f[entry[2][j]] = entry[2][j + 1] end
    local seq = tonumber(string.match(entry[1], '^(%d+)-'))
    local outcome = h['e:' .. (f['id'] or '')] or ''
    local ap, chg, st = string.match(outcome, '^(%d)|(%d)|(%a+)|')
    if not ap then ap, chg, st = f['ap'], f['ap'], f['a'] end
    put_event(rc, seq, {action = f['a'], applied = f['ap'], changed = chg, status = st,
      topic = f['t'] or '', source = f['s'], occurred = f['o'], recorded = tonumber(f['r']),
      id = f['id'] or '', principal = f['p'] or '', feed = f['f'] or '',
      conf = h['c:' .. (f['id'] or '')] or '', evidence = f['ev'] or ''})
    events = events + 1
    if seq > count then count = seq end
  end
  if #page < 500 then break end
  cursor = '(' .. page[#page][1]
until false
set_main(rc, count, all)
redis.call('DEL', state, hist)
return {1, records, events}
