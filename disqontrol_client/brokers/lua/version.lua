-- KEYS[1]: the prefix's data version key, KEYS[2]: its queue-name set.
-- ARGV[1]: the version a new prefix is stamped with, ARGV[2]: the version of
-- data written before versions existed (a queue-name set, no version key).
-- Stamps an unstamped prefix, atomically (two processes opening it at once
-- stamp it once); returns the key's value as stored, a string: the client
-- refuses one that is no version (tonumber gave nil for "1.4.2", 2 for "2.5").
local version = redis.call('GET', KEYS[1])
if version then return version end
if redis.call('EXISTS', KEYS[2]) == 1 then version = ARGV[2] else version = ARGV[1] end
redis.call('SET', KEYS[1], version)
return version
