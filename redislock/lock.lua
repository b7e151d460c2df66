-- Redlock acquire on one node. KEYS[1] lock key, KEYS[2] fence counter.
-- ARGV[1] owner id, ARGV[2] TTL in milliseconds.
-- Returns {1, fence} when taken (fence: the node's last granted token, 0 if
-- none), {0, pttl} when held by someone else.
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
	return {0, pttl}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
