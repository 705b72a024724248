-- KEYS: five keys per queue, queues in priority order. ARGV[1]: count, then
-- jobs to ack first as (key offset of their queue, id) pairs.
-- Returns {ms until the next due job or -1, then per job: queue index, id,
-- payload, nacks, deliveries, retry ms (0: never redelivered)}.
local now = now_ms()
local count = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  remove_job(queue_keys(tonumber(ARGV[i])), ARGV[i + 1])
end
local out = {-1}
local got = 0
local soonest = nil
for offset = 0, #KEYS - 1, 5 do
  local q = queue_keys(offset)
  -- An empty queue (per-tenant queues are mostly empty) costs one call, not five.
  if redis.call('EXISTS', q.ready, q.delayed, q.leased) > 0 then
    promote(q, now, false)
    while got < count do
      local id = redis.call('LPOP', q.ready)
      if not id then break end
      local jk = job_key(q, id)
      local f = redis.call('HMGET', jk, 'payload', 'retry', 'nacks', 'deliveries', 'expire_at')
      if f[1] and tonumber(f[5]) > now then
        local retry = tonumber(f[2])
        local lease = FOREVER_MS
        if retry > 0 then lease = retry end
        redis.call('ZADD', q.leased, now + lease, id)
        out[#out + 1] = offset / 5
        out[#out + 1] = id
        out[#out + 1] = f[1]
        out[#out + 1] = f[3]
        out[#out + 1] = f[4]
        out[#out + 1] = retry
        got = got + 1
      else
        -- past its ttl (or its hash already expired): dropped, never delivered
        redis.call('DEL', jk)
        redis.call('ZREM', q.expiry, id)
      end
    end
    if got >= count then break end
    local wait = next_due(q, now)
    if wait ~= nil and (soonest == nil or wait < soonest) then soonest = wait end
  end
end
if got == 0 and soonest ~= nil then out[1] = math.max(soonest, 0) end
return out
