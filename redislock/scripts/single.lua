-- The common part of the single-node scripts, put in each of them at its
-- --[[single.lua]] line (after a fast path that needs none of it: making
-- these functions costs about a microsecond a call). Every one takes the
-- same keys:
--   KEYS[1] the lock key: the exclusive holder's (a mutex's, a writer's)
--           owner id, with its TTL
--   KEYS[2] the fence counter: every grant of any kind takes the next token
--   KEYS[3] the waiter queue: owner id -> ticket (server time in
--           microseconds when it first queued, unique), so first come first
--   KEYS[4] the waiters' deadlines: owner id -> server time in ms after
--           which the entry is dead (its waiter stopped trying)
--   KEYS[5] given-up owners: owner id -> server time in ms until which its
--           attempts are refused
--   KEYS[6] the shared holders (readers, or a semaphore's permits): owner
--           id -> server time in ms at which its hold runs out
--   KEYS[7] the shared holders' tokens: owner id -> token
--   KEYS[8] the exclusive holder's value (an election leader's): "OWNER
--           VALUE", with the lock key's TTL; a value whose OWNER is not the
--           lock key's is stale and means none
--   KEYS[9] the queued waiters' values: owner id -> value, kept with the
--           grant that handOver makes; and the field '~head' (no owner id
--           starts with '~'): "OWNER SINCE", the barging waiter a release
--           last found at the head of the queue and since when (server
--           time in microseconds) it has been seen there (headSince)
--   KEYS[10] exists while some client observes the exclusive holder
--           (sholder.lua): every change of it (a grant, a release, a new
--           value) is then published, empty, on the channel KEYS[1]..':holder'
-- An owner id says what it wants (kindOf): a reader's ends in ":s", a
-- permit's of a semaphore of N in ":pN"; a mutex's or writer's has neither,
-- and holds "~B" if its client barges (Options.Fairness: bargeBound).
-- A name never mixes locks and semaphores, nor semaphores of different N:
-- acquire.lua refuses such a request.

local function now()
	local t = redis.call('TIME')
	return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- kindOf returns 'x' (exclusive), 's' (shared) or 'p' (a permit), and the
-- semaphore's number of permits (0 for a lock).
local function kindOf(owner)
	local k, n = string.match(owner, ':(%a)(%d*)$')
	if k == 's' then
		return 's', 0
	elseif k == 'p' then
		return 'p', tonumber(n)
	end
	return 'x', 0
end

-- bargeBound returns the bound in microseconds that a barging waiter's id
-- carries ("~B"), nil for a waiter handed the lock in queue order.
local function bargeBound(owner)
	return tonumber(string.match(owner, '~(%d+)'))
end

-- nowMicros is the server time in microseconds.
local function nowMicros()
	local t = redis.call('TIME')
	return t[1] * 1000000 + t[2]
end

-- extend makes key live at least ms from now.
local function extend(key, ms)
	if redis.call('PTTL', key) < ms then
		redis.call('PEXPIRE', key, ms)
	end
end

-- holderChanged tells the observers, if any, that the exclusive holder or
-- its value changed; they read it again (sholder.lua).
local function holderChanged()
	if redis.call('EXISTS', KEYS[10]) == 1 then
		redis.call('PUBLISH', KEYS[1] .. ':holder', '')
	end
end

-- takeExclusive makes owner the exclusive holder for ttl ms, with value
-- ('' or nil for none).
local function takeExclusive(owner, ttl, value)
	redis.call('SET', KEYS[1], owner, 'PX', ttl)
	if value and value ~= '' then
		redis.call('SET', KEYS[8], owner .. ' ' .. value, 'PX', ttl)
	end
	holderChanged()
end

local function chunked(cmd, key, list)
	for i = 1, #list, 1000 do
		redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
	end
end

-- pruneShared drops the shared holders whose hold ran out (a crashed
-- holder's slot comes back here) and returns how many hold.
local function pruneShared(t)
	local gone = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', t)
	if #gone > 0 then
		redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', t)
		chunked('HDEL', KEYS[7], gone)
	end
	return redis.call('ZCARD', KEYS[6])
end

-- queueLeft is called after entries left the queue: with the last of them
-- go the waiters' values and the barging head's record (KEYS[9]), which
-- would otherwise outlive the queue.
local function queueLeft()
	if redis.call('EXISTS', KEYS[3]) == 0 then
		redis.call('DEL', KEYS[9])
	end
end

-- pruneQueue drops the entries of waiters that stopped trying.
local function pruneQueue(t)
	local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', t)
	if #dead > 0 then
		chunked('ZREM', KEYS[3], dead)
		chunked('HDEL', KEYS[9], dead)
		redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', t)
		queueLeft()
	end
end

-- headSince returns since when (microseconds) the barging waiter w has
-- been at the head of the queue as releases have seen it, and true if this
-- is the first release to see it there (it is recorded now, and the queue's
-- TTL is the record's).
local function headSince(w, us)
	local h = redis.call('HGET', KEYS[9], '~head')
	if h then
		local o, since = string.match(h, '^(.*) (%d+)$')
		if o == w then
			return tonumber(since), false
		end
	end
	-- %.0f: Lua would write a number this large with an exponent.
	redis.call('HSET', KEYS[9], '~head', w .. ' ' .. string.format('%.0f', us))
	extend(KEYS[9], redis.call('PTTL', KEYS[3]))
	return us, true
end

-- handOver grants the lock to the waiters at the head of the queue that
-- can have it now, as a release, a give-back or a waiter's leaving may
-- allow: one writer, or every reader up to the next writer, or permits
-- while some are free. Each grant takes the next token, is made here
-- (the waiter holds it when its message arrives) and is published as
-- "OWNER TOKEN TTL" on channel.
-- A barging writer at the head (bargeBound) that has been seen there for
-- less than its bound is not granted the free lock: whoever asks first
-- takes it (often the client that just released it). The first release to
-- see it there tells it to try when its bound is up ("OWNER +BOUND", in
-- microseconds, on channel), without waking it to race for the lock; a
-- waiter that queued at the head was told so by its own attempt
-- (acquire.lua). Later releases leave it be, until one finds it there
-- longer than its bound, which hands it the lock.
local function handOver(ttl, channel)
	if redis.call('EXISTS', KEYS[3]) == 0 then
		return
	end
	local t = now()
	pruneQueue(t)
	local n = pruneShared(t)
	local held = redis.call('EXISTS', KEYS[1]) == 1
	while true do
		local w = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
		if not w then
			queueLeft()
			return
		end
		if not redis.call('ZSCORE', KEYS[4], w) then
			-- No deadline: an entry queued by an earlier version of this
			-- script, whose waiter retries by itself.
			redis.call('ZREM', KEYS[3], w)
		else
			local kind, limit = kindOf(w)
			if held or kind == 'x' and n > 0 or kind == 'p' and n >= limit then
				return
			end
			local bound = kind == 'x' and bargeBound(w)
			if bound then
				local us = nowMicros()
				local since, first = headSince(w, us)
				if first then
					redis.call('PUBLISH', channel, w .. ' +' .. bound)
					return
				elseif us - since < bound then
					return
				end
			end
			local token = redis.call('INCR', KEYS[2])
			if kind == 'x' then
				local value = redis.call('HGET', KEYS[9], w)
				if value then
					redis.call('HDEL', KEYS[9], w)
				end
				takeExclusive(w, ttl, value)
				held = true
			else
				redis.call('ZADD', KEYS[6], t + ttl, w)
				redis.call('HSET', KEYS[7], w, token)
				extend(KEYS[6], ttl)
				extend(KEYS[7], ttl)
				n = n + 1
			end
			redis.call('ZREM', KEYS[3], w)
			redis.call('ZREM', KEYS[4], w)
			redis.call('PUBLISH', channel, w .. ' ' .. token .. ' ' .. ttl)
		end
	end
end

-- The rest of the script follows.
