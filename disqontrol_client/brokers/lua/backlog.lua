-- KEYS: five keys per queue. ARGV[1]: cap. Returns each queue's ready jobs
-- (due delayed jobs and lapsed leases made ready first, jobs past their
-- ttl dropped), counted up to the cap. An empty queue costs one call: the
-- autoscaler asks for every queue of its groups each second.
local now = now_ms()
local cap = tonumber(ARGV[1])
local out = {}
for offset = 0, #KEYS - 1, 5 do
  local q = queue_keys(offset)
  local ready = 0
  if redis.call('EXISTS', q.ready, q.delayed, q.leased) > 0 then
    promote(q, now, true)
    ready = math.min(redis.call('LLEN', q.ready), cap)
  end
  out[#out + 1] = ready
end
return out
