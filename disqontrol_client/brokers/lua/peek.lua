-- KEYS: the five keys of one queue. ARGV[1]: count, ARGV[2]: skip. Ready
-- jobs first (in queue order), then delayed ones (soonest first), without
-- leasing them, after the first `skip` of that order.
-- Returns flat (id, payload, nacks, deliveries) groups.
local q = queue_keys(0)
local count = tonumber(ARGV[1])
local skip = tonumber(ARGV[2])
promote(q, now_ms(), true)
local ids = redis.call('LRANGE', q.ready, skip, skip + count - 1)
if #ids < count then
  local from = math.max(0, skip - redis.call('LLEN', q.ready))
  for _, id in ipairs(redis.call('ZRANGE', q.delayed, from, from + count - #ids - 1)) do
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
