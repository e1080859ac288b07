-- Authenticate an API key and take the call's tokens from its rate-limit bucket, in one
-- step. KEYS[1] the key's record hash, KEYS[2] its token bucket (same hash tag).
-- ARGV: SHA-256 hex of the presented secret, the operator's rate (requests/s, 0 = no
--       limit), its burst (tokens; 0 = twice the rate), the call's cost in tokens.
-- Returns {0} when the key does not exist, else
--   {1, tenant, role, stored hash, revoked_at ms, allowed (1|0), retry after ms}.
-- A token is taken only when the presented hash matches a live key, so nobody can
-- spend another key's budget by guessing at its id. The caller still compares the
-- hashes itself in constant time: this comparison only guards the bucket.
local rec = redis.call('HMGET', KEYS[1], 'tenant', 'role', 'hash', 'rev_at', 'rl')
if not rec[1] then
  return {0}
end
local revoked = tonumber(rec[4] or '0') or 0
if rec[3] ~= ARGV[1] or revoked > 0 then
  return {1, rec[1], rec[2], rec[3], revoked, 0, 0}
end
-- The operator's rate and burst are a ceiling: a key's own rate (with a bucket of twice
-- that) may only be lower. Applied here, at every call, so a key stored with a higher
-- rate (minted before the ceiling, or before the operator lowered it) is held to it.
local rate = tonumber(ARGV[2]) or 0
local burst = tonumber(ARGV[3]) or 0
if burst <= 0 then burst = rate * 2 end
local own = tonumber(rec[5] or '0') or 0
if own > 0 and (rate <= 0 or own < rate) then
  rate = own
  if burst <= 0 or own * 2 < burst then burst = own * 2 end
end
if rate <= 0 then
  return {1, rec[1], rec[2], rec[3], 0, 1, 0}
end
if burst < 1 then burst = 1 end
-- A call never costs more than a full bucket, so even the largest batch can pass once.
local cost = math.min(math.max(tonumber(ARGV[4]) or 1, 1), burst)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[2], 'tk', 'ts')
local tokens = tonumber(b[1]) or burst
local last = tonumber(b[2]) or now
if now > last then
  tokens = math.min(burst, tokens + (now - last) * rate / 1000)
end
local allowed, retry = 1, 0
if tokens >= cost then
  tokens = tokens - cost
else
  allowed = 0
  retry = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[2], 'tk', string.format('%.6f', tokens), 'ts', string.format('%d', now))
redis.call('PEXPIRE', KEYS[2], math.ceil(burst * 1000 / rate) + 1000)
return {1, rec[1], rec[2], rec[3], 0, allowed, retry}
