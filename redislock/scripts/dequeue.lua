-- A Redlock waiter gives up, on one node (a single node's: sdequeue.lua).
-- KEYS[1] waiter queue, KEYS[2] waiter deadlines, KEYS[3] lock key. ARGV[1]
-- owner id, ARGV[2] release channel.
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n == 0 and redis.call('EXISTS', KEYS[3]) == 0 then
	-- Not queued here: a release took it out to wake it, and it gives up
	-- instead of trying, so the next in line is woken in its place.
	local w = redis.call('ZRANGE', KEYS[1], 0, 0)
	if w[1] then
		redis.call('ZREM', KEYS[1], w[1])
		redis.call('ZREM', KEYS[2], w[1])
		redis.call('PUBLISH', ARGV[2], w[1])
	end
end
return n
