-- Single-node release (keys: single.lua, and KEYS[11] with ARGV[5]).
-- ARGV[1] owner id, ARGV[2] release channel, ARGV[3] TTL in milliseconds
-- for a hand-over, ARGV[4] how long (ms) to refuse this owner's attempts
-- from now on if it holds nothing, '0' for not at all; ARGV[5] '1' if the
-- client may send the script again by itself after a lost reply (go-redis's
-- retries): a release that frees the owner's hold then sets KEYS[11], the
-- owner's release note (PREFIX{NAME}:released:OWNER), for the TTL, and a
-- copy sent again that finds it answers 1 (its first copy released), not
-- 0. An owner id is one acquisition's, so the note can only be this
-- owner's own release.
-- Gives up the owner's hold; returns 1 if it held, 0 if not (nothing
-- changed, but for a shared hold that had run out, which is dropped).
-- What that frees goes straight to the waiters at the head of the queue
-- (handOver): they hold it when their messages arrive, with no further
-- round trip. A waiter that has given up gives such a grant back with its
-- dequeue (sdequeue.lua), which its driver retries until the server answers,
-- or when the message reaches its client; one whose process died leaves it
-- to expire after TTL.
local owner = ARGV[1]
if not string.find(owner, ':', 1, true) then
	-- A mutex (a writer) without a value that nobody waits for or
	-- observes: the common case, before single.lua's functions are made.
	local ok, cur = pcall(redis.call, 'GET', KEYS[1])
	if ok and cur == owner then
		local n = redis.call('EXISTS', KEYS[3], KEYS[8], KEYS[10])
		local free = n == 0
		if not free then
			-- Or only waited for, by a barging writer at the head that a
			-- release saw there less than its bound ago (handOver, which
			-- would do nothing else): the lock under contention, barging.
			local head = n == 1 and redis.call('ZRANGE', KEYS[3], 0, 0)[1]
			local bound = head and tonumber(string.match(head, '~(%d+)'))
			if bound then
				local h = redis.call('HGET', KEYS[9], '~head')
				if h and string.sub(h, 1, #head + 1) == head .. ' ' then
					local t = redis.call('TIME')
					free = t[1] * 1000000 + t[2] - tonumber(string.sub(h, #head + 2)) < bound
				end
			end
		end
		if free then
			redis.call('DEL', KEYS[1])
			if ARGV[5] == '1' then
				redis.call('SET', KEYS[11], '1', 'PX', ARGV[3])
			end
			return 1
		end
	end
end
--[[single.lua]]
local released = ARGV[5] == '1' and KEYS[11]
if released and redis.call('EXISTS', released) == 1 then
	return 1
end
local ours, freed = false, false
if kindOf(owner) == 'x' then
	local ok, cur = pcall(redis.call, 'GET', KEYS[1])
	if ok and cur == owner then
		-- The value, if any, is this owner's or a stale one: either goes.
		redis.call('DEL', KEYS[1], KEYS[8])
		ours, freed = true, true
		holderChanged()
	end
else
	local exp = redis.call('ZSCORE', KEYS[6], owner)
	if exp then
		redis.call('ZREM', KEYS[6], owner)
		redis.call('HDEL', KEYS[7], owner)
		ours, freed = tonumber(exp) > now(), true
	end
end
if freed then
	handOver(tonumber(ARGV[3]), ARGV[2])
end
if ours then
	if released then
		redis.call('SET', released, '1', 'PX', ARGV[3])
	end
	return 1
end
if ARGV[4] ~= '0' then
	-- The caller gives up an attempt whose outcome it does not know: it
	-- has not taken the lock, but may still be on its way, and must not
	-- take it afterwards (acquire.lua).
	local keep, t = tonumber(ARGV[4]), now()
	redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', t)
	redis.call('ZADD', KEYS[5], t + keep, owner)
	extend(KEYS[5], keep)
end
return 0
