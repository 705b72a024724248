-- KEYS: the five keys of one queue. ARGV: ids. Leased jobs go back to the
-- head of the queue with nacks + 1; jobs not leased are left alone.
local q = queue_keys(0)
local woke = false
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', q.leased, id) == 1 then
    local jk = job_key(q, id)
    redis.call('HINCRBY', jk, 'nacks', 1)
    redis.call('HSET', jk, 'state', 'ready')
    redis.call('LPUSH', q.ready, id)
    woke = true
  end
end
if woke then notify(q) end
return 1
