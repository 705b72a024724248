-- The scheduler's claim-and-add. KEYS: the five keys of one queue, then one
-- claim key per job. ARGV: claim ttl (ms), then (id, payload, delay_ms,
-- retry_ms, ttl_ms) per job. Each claim is taken with SET NX PX, its value
-- the job's id, and only the jobs of claims won are added: atomically, so a
-- crash keeps both or neither. A claim already holding this job's id was won
-- by this very call (replayed after a lost reply): it still counts as won, and
-- add_jobs skips the job that exists. Returns 1 (won) or 0 (taken) per job.
local claim_ttl = ARGV[1]
local won = {}
local out = {}
for j = 1, #KEYS - 5 do
  local first = 2 + (j - 1) * 5
  local id = ARGV[first]
  local key = KEYS[5 + j]
  if redis.call('SET', key, id, 'NX', 'PX', claim_ttl) or redis.call('GET', key) == id then
    for i = first, first + 4 do won[#won + 1] = ARGV[i] end
    out[j] = 1
  else
    out[j] = 0
  end
end
add_jobs(queue_keys(0), won, 1, now_ms())
return out
