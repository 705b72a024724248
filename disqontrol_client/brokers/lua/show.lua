-- KEYS: the five keys of one queue. ARGV[1]: id. The job's hash as a flat
-- field/value list plus its state (empty when unknown or past its ttl).
local q = queue_keys(0)
promote(q, now_ms(), true)
local fields = redis.call('HGETALL', job_key(q, ARGV[1]))
if #fields > 0 then
  fields[#fields + 1] = 'state'
  fields[#fields + 1] = state_of(q, ARGV[1])
end
return fields
