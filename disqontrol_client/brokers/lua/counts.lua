-- KEYS: the five keys of one queue. Returns {ready, delayed, leased} after
-- dropping expired jobs and promoting due ones, so counts never include a
-- job past its ttl.
local q = queue_keys(0)
promote(q, now_ms(), true)
return {redis.call('LLEN', q.ready), redis.call('ZCARD', q.delayed), redis.call('ZCARD', q.leased)}
