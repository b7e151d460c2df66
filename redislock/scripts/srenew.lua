-- Single-node renewal (keys: single.lua). ARGV[1] owner id, ARGV[2] TTL in
-- milliseconds, ARGV[3] '1' if the owner may have a value (KEYS[8]) to
-- extend with its exclusive hold.
-- Returns 1 if the owner holds and its hold is extended, 0 if not (a shared
-- hold that ran out is not extended: a writer may have been let in).
local owner, ttl = ARGV[1], tonumber(ARGV[2])
if not string.find(owner, ':', 1, true) then
	-- A mutex's or a writer's key.
	local ok, cur = pcall(redis.call, 'GET', KEYS[1])
	if ok and cur == owner then
		if ARGV[3] == '1' then
			redis.call('PEXPIRE', KEYS[8], ttl)
		end
		return redis.call('PEXPIRE', KEYS[1], ttl)
	end
	return 0
end
--[[single.lua]]
local t = now()
local exp = redis.call('ZSCORE', KEYS[6], owner)
if exp and tonumber(exp) > t then
	redis.call('ZADD', KEYS[6], t + ttl, owner)
	extend(KEYS[6], ttl)
	extend(KEYS[7], ttl)
	return 1
end
return 0
