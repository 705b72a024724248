-- Shared by every disqontrol script (prepended when the scripts are loaded).
-- A queue is five keys that share one hash tag, so one Redis Cluster slot:
--   ready (list of ids, FIFO), delayed (zset by ready time, ms),
--   leased (zset by lease expiry, ms), expiry (zset by ttl end, ms),
--   notify (list of wake-up tokens that blocked reservers BLPOP on).
-- Each job is a hash <base>:job:<id> (payload, retry, expire_at, nacks,
-- deliveries, ctime, and ready_at once it became ready other than at its
-- add: a delay's end, a lapsed lease, a nack); its state is where its id is. Times come from the
-- server clock (TIME), so clients with skewed clocks agree. Every redis.call
-- costs a few microseconds: the hot paths (reserve, ack) keep them few.
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

-- One token per job made ready (at most NOTIFY_CAP): as many blocked
-- reservers wake as there are jobs for them.
local function notify(q, jobs)
  local tokens = {}
  for i = 1, math.min(jobs, NOTIFY_CAP) do tokens[i] = '1' end
  redis.call('LPUSH', q.notify, unpack(tokens))
  redis.call('LTRIM', q.notify, 0, NOTIFY_CAP - 1)
end

-- Store jobs given as flat (id, payload, delay_ms, retry_ms, ttl_ms) groups
-- of args starting at index first. An id that exists already is skipped, so a
-- call retried after a lost reply does not add a job twice.
local function add_jobs(q, args, first, now)
  local ready = 0
  for i = first, #args, 5 do
    local id = args[i]
    local jk = job_key(q, id)
    if redis.call('EXISTS', jk) == 0 then
      local delay = tonumber(args[i + 2])
      local expire_at = now + tonumber(args[i + 4])
      if delay > 0 then  -- ready_at: what the queue's latency counts from (latency.lua)
        redis.call('HSET', jk, 'payload', args[i + 1], 'retry', args[i + 3], 'expire_at', expire_at,
                   'nacks', 0, 'deliveries', 0, 'ctime', now, 'ready_at', now + delay)
      else
        redis.call('HSET', jk, 'payload', args[i + 1], 'retry', args[i + 3], 'expire_at', expire_at,
                   'nacks', 0, 'deliveries', 0, 'ctime', now)
      end
      redis.call('PEXPIREAT', jk, expire_at + HASH_GRACE_MS)
      redis.call('ZADD', q.expiry, expire_at, id)
      if delay > 0 then
        redis.call('ZADD', q.delayed, now + delay, id)
      else
        redis.call('RPUSH', q.ready, id)
        ready = ready + 1
      end
    end
  end
  if ready > 0 then notify(q, ready) end
end

-- Remove one job whatever its state (ack and delete). An unknown id costs
-- no scan: only a job whose hash existed is looked for in the ready list.
local function remove_job(q, id)
  if redis.call('DEL', job_key(q, id)) == 1 then
    if redis.call('ZREM', q.leased, id) == 0 and redis.call('ZREM', q.delayed, id) == 0 then
      redis.call('LREM', q.ready, 1, id)
    end
  else
    redis.call('ZREM', q.leased, id)
    redis.call('ZREM', q.delayed, id)
  end
  redis.call('ZREM', q.expiry, id)
end

local function remove_jobs(q, args, first)
  for i = first, #args do remove_job(q, args[i]) end
end

-- Make due delayed jobs ready and redeliver jobs whose lease lapsed
-- (deliveries + 1), at the head of the queue. With purge, first drop every
-- job past its ttl (inspection does; reserve only drops the ones it pops).
local function promote(q, now, purge)
  if purge then
    local dead = redis.call('ZRANGEBYSCORE', q.expiry, '-inf', now, 'LIMIT', 0, PROMOTE_BATCH)
    if #dead > 0 then remove_jobs(q, dead, 1) end
  end
  local due = redis.call('ZRANGEBYSCORE', q.delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, PROMOTE_BATCH)
  local due_ids = {}
  for i = 1, #due - 1, 2 do  -- id, due time
    local jk = job_key(q, due[i])
    -- A job added by an older client has no ready_at: the latency would
    -- count its delay too. Never made for a hash that is gone.
    if redis.call('HEXISTS', jk, 'ready_at') == 0 and redis.call('EXISTS', jk) == 1 then
      redis.call('HSET', jk, 'ready_at', due[i + 1])
    end
    due_ids[#due_ids + 1] = due[i]
  end
  if #due_ids > 0 then
    redis.call('RPUSH', q.ready, unpack(due_ids))
    redis.call('ZREM', q.delayed, unpack(due_ids))
  end
  local lapsed = redis.call('ZRANGEBYSCORE', q.leased, '-inf', now, 'WITHSCORES', 'LIMIT', 0, PROMOTE_BATCH)
  local newest_first = {}
  for i = #lapsed - 1, 1, -2 do  -- id, lease end
    local jk = job_key(q, lapsed[i])
    redis.call('HINCRBY', jk, 'deliveries', 1)
    redis.call('HSET', jk, 'ready_at', lapsed[i + 1])
    newest_first[#newest_first + 1] = lapsed[i]
  end
  if #newest_first > 0 then
    redis.call('LPUSH', q.ready, unpack(newest_first))  -- the oldest lands at the head
    redis.call('ZREM', q.leased, unpack(newest_first))
  end
end

-- The state of a job that exists: where its id is.
local function state_of(q, id)
  if redis.call('ZSCORE', q.leased, id) then return 'leased' end
  if redis.call('ZSCORE', q.delayed, id) then return 'delayed' end
  return 'ready'
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
