-- KEYS: the five keys of the new job's queue, then the five of the old job's.
-- ARGV: old id, then (id, payload, delay_ms, retry_ms, ttl_ms) of the new job.
-- Add first, remove second, atomically.
add_jobs(queue_keys(0), ARGV, 2, now_ms())
remove_jobs(queue_keys(5), {ARGV[1]}, 1)
return 1
