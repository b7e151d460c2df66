-- A single-node waiter gives up (keys: single.lua). ARGV[1] owner id,
-- ARGV[2] release channel, ARGV[3] TTL in milliseconds for a hand-over.
-- Takes the waiter out of the queue and lets in those it held back (readers
-- behind a writer that leaves, permits behind a waiter that leaves): a
-- cancelled wait leaves no entry that blocks the next. Returns 1 if it was
-- queued.
--[[single.lua]]
local n = redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[9], ARGV[1])
if n == 1 then
	handOver(tonumber(ARGV[3]), ARGV[2])
end
return n
