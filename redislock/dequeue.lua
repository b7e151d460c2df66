-- KEYS[1] waiter queue. ARGV[1] owner id of a waiter that gave up.
return redis.call('ZREM', KEYS[1], ARGV[1])
