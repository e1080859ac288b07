-- Replace a tenant's settings hash if nobody wrote it since it was read
-- (optimistic concurrency: UpdateTenantSettings is a read-merge-validate-write).
-- KEYS[1] settings hash. ARGV[1] the version read ("0" = never written),
-- ARGV[2..] field, value pairs.
-- Returns the new version, -1 when the stored version moved on, -2 when the tenant
-- does not exist (no registry field t:at: nothing is written).
-- The registry fields (t:*) share the hash and are kept.
local key = KEYS[1]
if redis.call('HEXISTS', key, 't:at') == 0 then
  return -2
end
local current = redis.call('HGET', key, 'ver') or '0'
if current ~= ARGV[1] then
  return -1
end
local fields = redis.call('HKEYS', key)
for _, name in ipairs(fields) do
  if string.sub(name, 1, 2) ~= 't:' then
    redis.call('HDEL', key, name)
  end
end
for i = 2, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
local version = tonumber(current) + 1
redis.call('HSET', key, 'ver', version)
return version
