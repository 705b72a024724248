-- KEYS: the five keys of one queue. ARGV[1]: count. Ready jobs first (in
-- queue order), then delayed ones (soonest first), without leasing them.
-- Returns flat (id, payload, nacks, deliveries) groups.
local q = queue_keys(0)
local count = tonumber(ARGV[1])
promote(q, now_ms(), true)
local ids = redis.call('LRANGE', q.ready, 0, count - 1)
if #ids < count then
  for _, id in ipairs(redis.call('ZRANGE', q.delayed, 0, count - #ids - 1)) do
    ids[#ids + 1] = id
  end
end
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', job_key(q, id), 'payload', 'nacks', 'deliveries')
  if f[1] then
    out[#out + 1] = id
    out[#out + 1] = f[1]
    out[#out + 1] = f[2]
    out[#out + 1] = f[3]
  end
end
return out
