-- KEYS: the five keys of one queue. ARGV[1]: ms from now, then ids. Each
-- leased job among them is leased until then at least (never shortened);
-- the others (acked, lapsed and taken back) are left alone.
local q = queue_keys(0)
local until_ms = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', q.leased, ARGV[i])
  if score and tonumber(score) < until_ms then
    redis.call('ZADD', q.leased, 'XX', until_ms, ARGV[i])
  end
end
return 0
