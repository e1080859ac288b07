-- Replace a tenant's settings hash if nobody wrote it since it was read
-- (optimistic concurrency: UpdateTenantSettings is a read-merge-validate-write).
-- KEYS[1] settings hash. ARGV[1] the version read ("0" = never written),
-- ARGV[2..] field, value pairs.
-- Returns the new version, or -1 when the stored version moved on.
local key = KEYS[1]
local current = redis.call('HGET', key, 'ver') or '0'
if current ~= ARGV[1] then
  return -1
end
redis.call('DEL', key)
for i = 2, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
local version = tonumber(current) + 1
redis.call('HSET', key, 'ver', version)
return version
