-- Shared by every disqontrol script (prepended when the scripts are loaded).
-- A queue is five keys that share one hash tag, so one Redis Cluster slot:
--   ready (list of ids, FIFO), delayed (zset by ready time, ms),
--   leased (zset by lease expiry, ms), expiry (zset by ttl end, ms),
--   notify (list of wake-up tokens that blocked reservers BLPOP on).
-- Each job is a hash <base>:job:<id> (payload, retry, expire_at, nacks,
-- deliveries, ctime, state). Times come from the server clock (TIME), so
-- clients with skewed clocks agree.
local NOTIFY_CAP = 16          -- wake-up tokens kept per queue
local PROMOTE_BATCH = 1000     -- due jobs moved per queue per call
local HASH_GRACE_MS = 60000    -- job hashes outlive their ttl by this, then Redis drops them
local FOREVER_MS = 315360000000  -- retry 0 = never redeliver: a ten-year lease

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The five keys of the queue whose keys start at KEYS[offset + 1].
local function queue_keys(offset)
  return {ready = KEYS[offset + 1], delayed = KEYS[offset + 2], leased = KEYS[offset + 3],
          expiry = KEYS[offset + 4], notify = KEYS[offset + 5]}
end

local function job_key(q, id)
  -- "<base>:ready" -> "<base>:job:<id>": same hash tag as the queue keys
  return string.sub(q.ready, 1, -7) .. ':job:' .. id
end

local function notify(q)
  redis.call('LPUSH', q.notify, '1')
  redis.call('LTRIM', q.notify, 0, NOTIFY_CAP - 1)
end

-- Store jobs given as flat (id, payload, delay_ms, retry_ms, ttl_ms) groups
-- of args starting at index first. An id that exists already is skipped, so a
-- call retried after a lost reply does not add a job twice.
local function add_jobs(q, args, first, now)
  local woke = false
  for i = first, #args, 5 do
    local id = args[i]
    local jk = job_key(q, id)
    if redis.call('EXISTS', jk) == 0 then
      local delay = tonumber(args[i + 2])
      local expire_at = now + tonumber(args[i + 4])
      local state = 'ready'
      if delay > 0 then state = 'delayed' end
      redis.call('HSET', jk, 'payload', args[i + 1], 'retry', args[i + 3], 'expire_at', expire_at,
                 'nacks', 0, 'deliveries', 0, 'ctime', now, 'state', state)
      redis.call('PEXPIREAT', jk, expire_at + HASH_GRACE_MS)
      redis.call('ZADD', q.expiry, expire_at, id)
      if delay > 0 then
        redis.call('ZADD', q.delayed, now + delay, id)
      else
        redis.call('RPUSH', q.ready, id)
        woke = true
      end
    end
  end
  if woke then notify(q) end
end

-- Remove jobs whatever their state (ack and delete). Unknown ids are ignored.
local function remove_jobs(q, args, first)
  for i = first, #args do
    local id = args[i]
    local jk = job_key(q, id)
    local state = redis.call('HGET', jk, 'state')
    if state == 'ready' then
      redis.call('LREM', q.ready, 1, id)
    elseif state == 'delayed' then
      redis.call('ZREM', q.delayed, id)
    elseif state == 'leased' then
      redis.call('ZREM', q.leased, id)
    end
    redis.call('ZREM', q.expiry, id)
    redis.call('DEL', jk)
  end
end

-- Drop jobs past their ttl, make due delayed jobs ready and redeliver jobs
-- whose lease lapsed (deliveries + 1), at the head of the queue.
local function promote(q, now)
  local dead = redis.call('ZRANGEBYSCORE', q.expiry, '-inf', now, 'LIMIT', 0, PROMOTE_BATCH)
  if #dead > 0 then remove_jobs(q, dead, 1) end
  local due = redis.call('ZRANGEBYSCORE', q.delayed, '-inf', now, 'LIMIT', 0, PROMOTE_BATCH)
  for _, id in ipairs(due) do
    redis.call('RPUSH', q.ready, id)
    redis.call('HSET', job_key(q, id), 'state', 'ready')
  end
  if #due > 0 then redis.call('ZREM', q.delayed, unpack(due)) end
  local lapsed = redis.call('ZRANGEBYSCORE', q.leased, '-inf', now, 'LIMIT', 0, PROMOTE_BATCH)
  for i = #lapsed, 1, -1 do
    local id = lapsed[i]
    local jk = job_key(q, id)
    redis.call('HINCRBY', jk, 'deliveries', 1)
    redis.call('HSET', jk, 'state', 'ready')
    redis.call('LPUSH', q.ready, id)
  end
  if #lapsed > 0 then redis.call('ZREM', q.leased, unpack(lapsed)) end
end

-- Milliseconds until the queue's next delayed job or lease falls due, or nil.
local function next_due(q, now)
  local best = nil
  for _, key in ipairs({q.delayed, q.leased}) do
    local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if head[2] then
      local wait = tonumber(head[2]) - now
      if best == nil or wait < best then best = wait end
    end
  end
  return best
end
