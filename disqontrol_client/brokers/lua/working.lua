-- KEYS: the five keys of one queue. ARGV[1]: id. Extends the lease by the
-- job's retry from now; returns 0 when the job is not leased.
local q = queue_keys(0)
local id = ARGV[1]
if not redis.call('ZSCORE', q.leased, id) then return 0 end
local retry = tonumber(redis.call('HGET', job_key(q, id), 'retry'))
local lease = FOREVER_MS
if retry and retry > 0 then lease = retry end
redis.call('ZADD', q.leased, 'XX', now_ms() + lease, id)
return 1
