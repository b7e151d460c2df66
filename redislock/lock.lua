-- Redlock acquire on one node. KEYS[1] lock key, KEYS[2] fence counter,
-- KEYS[3] waiter queue (owner -> ticket), KEYS[4] waiter deadlines (owner ->
-- server time in ms after which the entry is dead).
-- ARGV[1] owner id, ARGV[2] TTL in milliseconds, ARGV[3] the waiter's ticket
-- ('' if the caller does not wait).
-- Returns {1, fence} when taken (fence: the node's last granted token, 0 if
-- none), {0, pttl} when held by someone else.
-- The ticket is chosen by the client and is the same on every node, so the
-- nodes' queues agree on who is first and their releases name the same
-- waiter: one client tries, instead of every client splitting the vote.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if cur then
	local pttl = redis.call('PTTL', KEYS[1])
	if pttl < 0 then
		return redis.error_reply('DLOCK key exists without a TTL: not a lock made by dlock')
	end
	if ARGV[3] ~= '' then
		-- A live waiter tries again at least once per holder TTL, so
		-- 2 TTL + 1 s after its last try it is dead.
		local t = redis.call('TIME')
		local keep = 2 * tonumber(ARGV[2]) + 1000
		redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[1])
		redis.call('ZADD', KEYS[4], t[1] * 1000 + math.floor(t[2] / 1000) + keep, ARGV[1])
		if redis.call('PTTL', KEYS[3]) < keep then
			redis.call('PEXPIRE', KEYS[3], keep)
			redis.call('PEXPIRE', KEYS[4], keep)
		end
	end
	return {0, pttl}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
