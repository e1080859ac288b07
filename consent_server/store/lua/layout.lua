-- The compact layout (schemas 2 and 3, store/keys.py): recipients' records and history events
-- as fields of shared hash buckets. load_script pastes this file where a script says
-- "--! include layout.lua". Every value written here is at most 64 bytes (longer ones
-- continue in further fields), so the buckets keep Redis's listpack encoding.
local US = '\31'
local CHUNK = 64
local SPREAD = 8
local WINDOW = 32
local SRC = {api = 'a', keyword = 'k', button = 'b', link = 'l', admin = 'd', import = 'i',
             provider = 'p', erasure = 'x'}
local SRC_NAME = {}
for name, code in pairs(SRC) do SRC_NAME[code] = name end
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

local function b36(n)
  n = math.floor(tonumber(n))
  if n == 0 then return '0' end
  local out = ''
  while n > 0 do
    local d = n % 36
    out = string.sub(B36, d + 1, d + 1) .. out
    n = (n - d) / 36
  end
  return out
end

local function split(s, sep)
  local t, pos = {}, 1
  while true do
    local at = string.find(s, sep, pos, true)
    if not at then t[#t + 1] = string.sub(s, pos); return t end
    t[#t + 1] = string.sub(s, pos, at - 1)
    pos = at + 1
  end
end

-- A recipient: {bucket key, history prefix, field, bucket number, buckets}.
local function recipient(bucket_key, hist_prefix, descriptor)
  local d = split(descriptor, US)
  return {bucket_key, hist_prefix, d[1], tonumber(d[2]), tonumber(d[3])}
end

-- A round-1 record "status|occurred|rev|source|event_id" <-> its packed form.
local function pack_record(status, occurred, rev, source, event_id)
  return string.sub(status, 1, 1) .. b36(occurred) .. ',' .. b36(rev) .. ','
    .. (SRC[source] or source) .. ',' .. event_id
end
local function unpack_record(p)
  if not p or p == '' then return false end
  local st = 'out'
  if string.sub(p, 1, 1) == 'i' then st = 'in' end
  local o, r, s, e = string.match(p, '^.([0-9a-z]+),([0-9a-z]+),([^,]*),(.*)$')
  return st .. '|' .. string.format('%d', tonumber(o, 36)) .. '|'
    .. string.format('%d', tonumber(r, 36)) .. '|' .. (SRC_NAME[s] or s) .. '|' .. e
end

-- The recipient's main field: event count and packed all-topics record.
local function main_of(rc)
  local v = redis.call('HGET', rc[1], rc[3])
  if not v then return 0, false end
  local at = string.find(v, ';', 1, true)
  if not at then return tonumber(v, 36), false end
  return tonumber(string.sub(v, 1, at - 1), 36), string.sub(v, at + 1)
end

-- A scope's record in round-1 form (false when none). field: "s:*" or "s:<topic>".
local function get_record(rc, field)
  if field == 's:*' then
    local _, packed = main_of(rc)
    return unpack_record(packed)
  end
  return unpack_record(redis.call('HGET', rc[1], rc[3] .. US .. string.sub(field, 3)))
end

-- The event count and a scope's record set (packed false: keep the all-topics record).
local function set_main(rc, count, packed)
  local v = b36(count)
  if packed then v = v .. ';' .. packed end
  redis.call('HSET', rc[1], rc[3], v)
end
local function set_record(rc, count, field, packed)
  if field == 's:*' then
    set_main(rc, count, packed)
  else
    redis.call('HSET', rc[1], rc[3] .. US .. string.sub(field, 3), packed)
    local _, all = main_of(rc)
    set_main(rc, count, all)
  end
end

-- Every scope field of the recipient ("s:*", "s:<topic>") with its round-1 record.
local function all_records(rc)
  local out = {}
  local _, all = main_of(rc)
  if all then out['s:*'] = unpack_record(all) end
  local pattern = string.gsub(rc[3] .. US, '[%*%?%[%]\\]', '\\%0') .. '*'
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', rc[1], cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      out['s:' .. string.sub(page[2][i], #rc[3] + 2)] = unpack_record(page[2][i + 1])
    end
  until cursor == '0'
  return out
end

-- History: the bucket and field of event seq, and long values in 64-byte pieces.
local function event_key(rc, seq)
  local hb = (rc[4] + math.floor((seq - 1) / SPREAD)) % rc[5]
  return rc[2] .. string.format('%x', hb), rc[3] .. US .. string.format('%d', seq)
end
local function put_long(key, field, value)
  redis.call('HSET', key, field, string.sub(value, 1, CHUNK))
  local n, pos = 1, CHUNK + 1
  while pos <= #value do
    redis.call('HSET', key, field .. US .. n, string.sub(value, pos, pos + CHUNK - 1))
    n, pos = n + 1, pos + CHUNK
  end
end
local function get_long(key, field)
  local v = redis.call('HGET', key, field)
  if not v then return false end
  local n, piece = 1, v
  while #piece == CHUNK do
    piece = redis.call('HGET', key, field .. US .. n)
    if not piece then break end
    v = v .. piece
    n = n + 1
  end
  return v
end
local function del_long(key, field)
  local v = redis.call('HGET', key, field)
  if not v then return 0 end
  redis.call('HDEL', key, field)
  local n, piece = 1, v
  while #piece == CHUNK do
    piece = redis.call('HGET', key, field .. US .. n)
    if not piece then break end
    redis.call('HDEL', key, field .. US .. n)
    n = n + 1
  end
  return 1
end

-- A packed event: flags (action, applied, changed, status: i|o / 0|1 / 0|1 / i|o|n),
-- topic, source, occurred, recorded (base 36), event id, principal, feed entry id,
-- confirmation id, evidence; joined by \31 (no validated value holds a control char).
local function pack_event(e)
  local feed = e.feed
  local rec_s = string.format('%d', e.recorded)
  if string.sub(feed, 1, #rec_s + 1) == rec_s .. '-' then
    feed = string.sub(feed, #rec_s + 1)  -- "-<seq>": the feed entry has the event's ms
  end
  return string.sub(e.action, 1, 1) .. e.applied .. e.changed .. string.sub(e.status, 1, 1)
    .. US .. e.topic .. US .. (SRC[e.source] or e.source) .. US .. b36(e.occurred) .. US
    .. b36(e.recorded) .. US .. e.id .. US .. e.principal .. US .. feed .. US .. e.conf
    .. US .. e.evidence
end
local STATUS = {i = 'in', o = 'out', n = 'none'}
local function unpack_event(v)
  local f = split(v, US)
  local flags = f[1]
  local ev = {action = STATUS[string.sub(flags, 1, 1)], applied = string.sub(flags, 2, 2),
    changed = string.sub(flags, 3, 3), status = STATUS[string.sub(flags, 4, 4)],
    topic = f[2], source = SRC_NAME[f[3]] or f[3], occurred = tonumber(f[4], 36),
    recorded = tonumber(f[5], 36), id = f[6], principal = f[7], feed = f[8], conf = f[9],
    evidence = table.concat(f, US, 10)}
  if string.sub(ev.feed, 1, 1) == '-' then
    ev.feed = string.format('%d', ev.recorded) .. ev.feed
  end
  return ev
end
local function put_event(rc, seq, e)
  local key, field = event_key(rc, seq)
  put_long(key, field, pack_event(e))
end
local function get_event(rc, seq)
  local key, field = event_key(rc, seq)
  local v = get_long(key, field)
  if not v then return false end
  return unpack_event(v)
end
-- The outcome string of an event (record_event.lua's reply).
local function outcome_of(e, seq)
  return e.applied .. '|' .. e.changed .. '|' .. e.status .. '|' .. string.format('%d', seq)
    .. '|' .. string.format('%d', e.recorded) .. '|' .. e.action .. ':' .. e.topic
end
-- The recipient's event with this id among its last WINDOW events, and its seq.
local function find_event(rc, count, event_id)
  local low = count - WINDOW + 1
  if low < 1 then low = 1 end
  for seq = count, low, -1 do
    local e = get_event(rc, seq)
    if e and e.id == event_id then return e, seq end
  end
  return false, 0
end
