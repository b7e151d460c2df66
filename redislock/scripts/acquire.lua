-- Single-node acquire (keys: single.lua). ARGV[1] owner id, ARGV[2] TTL in
-- milliseconds, ARGV[3] "1" if the caller waits (is subscribed) and should
-- be queued on failure, ARGV[4] the value to keep with an exclusive hold
-- (an election leader's; '' for none).
-- Returns {1, token} when granted; {0, wait, fence[, retry]} when it must
-- wait: wait is the time in ms after which to try again at the latest (a
-- holder's expiry), fence the counter now, so any grant made before this
-- call (and announced by a message that may still be on its way) has a
-- token no larger, and any grant after it a larger one; retry, for a
-- barging waiter that releases have seen at the head of the queue for less
-- than its bound, the time in microseconds until its bound is up (no
-- release wakes it before: handOver); {2, limit} when
-- the name is held or awaited with another limit (0: as a lock), which
-- refuses the request.
local owner, ttl = ARGV[1], tonumber(ARGV[2])
if ARGV[4] == '' and not string.find(owner, ':', 1, true)
	and redis.call('EXISTS', KEYS[1], KEYS[3], KEYS[5], KEYS[6], KEYS[10]) == 0 then
	-- A mutex (a writer: no ':' in its id) without a value, with nobody
	-- about: no holder, waiter, given-up attempt (so not this one),
	-- reader, permit or observer. The uncontended case in three calls:
	-- the first fast path below, with the lock key and the given-up set
	-- found absent by the same EXISTS.
	local token = redis.call('INCR', KEYS[2])
	redis.call('SET', KEYS[1], owner, 'PX', ttl)
	return {1, token}
end
if redis.call('ZSCORE', KEYS[5], owner) then
	-- A copy of an attempt that arrives after its owner gave it up
	-- (release.lua): taking the lock now would leave it to nobody.
	return redis.error_reply('DLOCK attempt arrived after its owner gave up')
end
local cur = redis.call('GET', KEYS[1])
if cur == owner then
	-- A release handed the lock to us (its message may still be on its
	-- way), or our own earlier attempt whose reply was lost.
	redis.call('PEXPIRE', KEYS[1], ttl)
	return {1, tonumber(redis.call('GET', KEYS[2]))}
end
if cur and redis.call('PTTL', KEYS[1]) < 0 then
	return redis.error_reply('DLOCK key exists without a TTL: not a lock made by dlock')
end
if not cur and ARGV[4] == '' and not string.find(owner, ':', 1, true) then
	-- A mutex (a writer: no ':' in its id) without a value, with nobody
	-- else about (no waiter, reader, permit or observer): the common case,
	-- in as few calls as before read-write locks, and before single.lua's
	-- functions are made (which costs a microsecond). Or with waiters
	-- only, none of them this caller, and no semaphore's: the lock free
	-- under contention, which a writer takes whoever waits (as below).
	local n = redis.call('EXISTS', KEYS[3], KEYS[6], KEYS[10])
	local head = n == 1 and redis.call('ZRANGE', KEYS[3], 0, 0)[1]
	if n == 0 or head and not string.find(head, ':p', 1, true) and not redis.call('ZSCORE', KEYS[3], owner) then
		local token = redis.call('INCR', KEYS[2])
		redis.call('SET', KEYS[1], owner, 'PX', ttl)
		return {1, token}
	end
end
--[[single.lua]]
local kind, limit = kindOf(owner)
local t = now()
if kind ~= 'x' then
	local exp = redis.call('ZSCORE', KEYS[6], owner)
	if exp and tonumber(exp) > t then
		redis.call('ZADD', KEYS[6], t + ttl, owner)
		extend(KEYS[6], ttl)
		extend(KEYS[7], ttl)
		return {1, tonumber(redis.call('HGET', KEYS[7], owner))}
	end
end
local n = pruneShared(t)
pruneQueue(t)

-- The limit the name is held or awaited with: a lock (0) or a semaphore.
local other = -1
local m = redis.call('ZRANGE', KEYS[6], 0, 0)[1] or redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if cur then
	other = 0
elseif m then
	local _, l = kindOf(m)
	other = l
end
if other >= 0 and other ~= limit then
	return {2, other}
end

local mine = redis.call('ZSCORE', KEYS[3], owner)
local wait
local function earliest()
	local e = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
	return math.max(tonumber(e[2]) - t, 1)
end
if cur then
	wait = redis.call('PTTL', KEYS[1])
elseif kind == 'x' then
	if n > 0 then
		wait = earliest()
	end
elseif kind == 's' then
	-- A reader waits on the last writer queued before it, never on other
	-- readers; it does not count those after it, which would deadlock.
	local before = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', mine and '(' .. mine or '+inf')
	for i = #before, 1, -1 do
		if kindOf(before[i]) == 'x' and redis.call('ZSCORE', KEYS[4], before[i]) then
			wait = ttl
			break
		end
	end
else
	local before
	if mine then
		before = redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. mine)
	else
		before = redis.call('ZCARD', KEYS[3])
	end
	if n + before >= limit then
		wait = ttl
		if n > 0 then
			wait = math.min(earliest(), ttl)
		end
	end
end

if wait then
	if ARGV[3] == '1' then
		-- A live waiter tries again at the latest after wait, which is
		-- never longer than the longer of its TTL and the holder's, so it
		-- is dead 2 x the longer of the two + 1 s after this try.
		local keep = 2 * math.max(ttl, wait) + 1000
		if not mine then
			local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2]
			local ticket = redis.call('TIME')
			ticket = ticket[1] * 1000000 + ticket[2]
			if last and tonumber(last) >= ticket then
				ticket = tonumber(last) + 1
			end
			redis.call('ZADD', KEYS[3], ticket, owner)
			if not last and kind == 'x' and bargeBound(owner) then
				-- A barging writer at the head from its first try: its
				-- bound runs from now (headSince).
				redis.call('HSET', KEYS[9], '~head', owner .. ' ' .. string.format('%.0f', ticket))
				extend(KEYS[9], keep)
			end
			mine = ticket
		end
		if ARGV[4] ~= '' then
			redis.call('HSET', KEYS[9], owner, ARGV[4])
			extend(KEYS[9], keep)
		end
		redis.call('ZADD', KEYS[4], t + keep, owner)
		extend(KEYS[3], keep)
		extend(KEYS[4], keep)
	end
	local retry
	local bound = kind == 'x' and mine and bargeBound(owner)
	if bound then
		local o, since = string.match(redis.call('HGET', KEYS[9], '~head') or '', '^(.*) (%d+)$')
		if o == owner then
			retry = tonumber(since) + bound - nowMicros()
			if retry <= 0 then
				retry = nil
			end
		end
	end
	return {0, wait, tonumber(redis.call('GET', KEYS[2]) or '0'), retry}
end
local token = redis.call('INCR', KEYS[2])
if kind == 'x' then
	takeExclusive(owner, ttl, ARGV[4])
else
	redis.call('ZADD', KEYS[6], t + ttl, owner)
	redis.call('HSET', KEYS[7], owner, token)
	extend(KEYS[6], ttl)
	extend(KEYS[7], ttl)
end
if mine then
	redis.call('ZREM', KEYS[3], owner)
	redis.call('ZREM', KEYS[4], owner)
	redis.call('HDEL', KEYS[9], owner)
	queueLeft()
end
return {1, token}
