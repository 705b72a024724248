-- KEYS: the five keys of one queue. ARGV[1]: id. The job's hash as a flat
-- field/value list (empty when unknown or past its ttl).
local q = queue_keys(0)
promote(q, now_ms())
return redis.call('HGETALL', job_key(q, ARGV[1]))
