-- KEYS: the five keys of one queue. Returns the milliseconds its oldest
-- ready job has waited since it became ready (0: none is ready), reading
-- only heads, never the whole queue: the ready list's first job (ready since
-- ready_at, else its add), and the first delayed job and lapsed lease not
-- yet moved to the list (ready since their score). Writes nothing.
local q = queue_keys(0)
local now = now_ms()
local since = nil
local head = redis.call('LINDEX', q.ready, 0)
if head then
  local f = redis.call('HMGET', job_key(q, head), 'ready_at', 'ctime', 'expire_at')
  if f[2] and tonumber(f[3]) > now then since = tonumber(f[1] or f[2]) end
end
for _, key in ipairs({q.delayed, q.leased}) do
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if due[2] and (since == nil or tonumber(due[2]) < since) then since = tonumber(due[2]) end
end
if since == nil then return 0 end
return math.max(now - since, 0)
