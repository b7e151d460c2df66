-- A single-node waiter gives up (keys: single.lua). ARGV[1] owner id,
-- ARGV[2] release channel, ARGV[3] TTL in milliseconds for a hand-over.
-- Takes the waiter out of the queue and lets in those it held back (readers
-- behind a writer that leaves, permits behind a waiter that leaves): a
-- cancelled wait leaves no entry that blocks the next. If a release granted
-- the waiter the lock before this ran (its client may have left the release
-- channel and never hear of it, e.g. when this request was cut off and came
-- late, or is a retry), the grant is given back here and passed on to the
-- next, as a release would. Returns 1 if it was queued, 2 if it gave back a
-- grant, 0 if neither.
--[[single.lua]]
local owner = ARGV[1]
local n = redis.call('ZREM', KEYS[3], owner)
redis.call('ZREM', KEYS[4], owner)
redis.call('HDEL', KEYS[9], owner)
queueLeft()
local freed = n == 1
if n == 0 then
	if kindOf(owner) == 'x' then
		local ok, cur = pcall(redis.call, 'GET', KEYS[1])
		if ok and cur == owner then
			redis.call('DEL', KEYS[1], KEYS[8])
			holderChanged()
			n, freed = 2, true
		end
	elseif redis.call('ZREM', KEYS[6], owner) == 1 then
		redis.call('HDEL', KEYS[7], owner)
		n, freed = 2, true
	end
end
if freed then
	handOver(tonumber(ARGV[3]), ARGV[2])
end
return n
