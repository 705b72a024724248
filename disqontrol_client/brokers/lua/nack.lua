-- KEYS: the five keys of one queue. ARGV: ids. Leased jobs go back to the
-- head of the queue with nacks + 1; jobs not leased are left alone.
local q = queue_keys(0)
local now = now_ms()
local back = 0
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', q.leased, id) == 1 then
    local jk = job_key(q, id)
    redis.call('HINCRBY', jk, 'nacks', 1)
    redis.call('HSET', jk, 'ready_at', now)
    redis.call('LPUSH', q.ready, id)
    back = back + 1
  end
end
if back > 0 then notify(q, back) end
return 1
