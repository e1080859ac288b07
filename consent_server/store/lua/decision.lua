-- The decision rule, shared by send.lua (decide and enqueue) and claim.lua (re-check at
-- delivery): load_script pastes this file where a script says "--! include decision.lua"
-- (Redis scripts have no require). A record is "status|occurred_ms|revision|...".
local function parse_record(rec)
  if not rec then return nil end
  local status, occurred, rev = string.match(rec, '^(%a+)|(%d+)|(%d+)|')
  return {status, tonumber(occurred), tonumber(rev)}
end

-- a is newer than b (b may be nil): by (occurred_at, revision).
local function newer(a, b)
  return a and (not b or a[2] > b[2] or (a[2] == b[2] and a[3] > b[3]))
end

-- recs: the live {all-topics, topic} records (HMGET 's:*', field); tomb: the erasure
-- tombstone's same two. A tombstone record competes like a live one: newer wins, and
-- replaces the live record in recs. Returns the deciding record (parsed; nil: none,
-- the policy decides) and whether it is the topic's (else all topics').
local function decide(recs, tomb)
  for i = 1, 2 do
    if newer(parse_record(tomb[i]), parse_record(recs[i])) then
      recs[i] = tomb[i]
    end
  end
  local all, top = parse_record(recs[1]), parse_record(recs[2])
  if newer(top, all) then
    return top, true
  end
  return all, false
end
