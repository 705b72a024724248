-- ack and delete. KEYS: the five keys of one queue. ARGV: ids.
remove_jobs(queue_keys(0), ARGV, 1)
return 1
