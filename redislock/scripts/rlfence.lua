-- Redlock fence write-back on one node. KEYS[1] lock key, KEYS[2] fence
-- counter. ARGV[1] the attempt's key value, ARGV[2] token.
-- Raises the counter to the token if we still hold the lock here; returns 1
-- if we do, 0 if not.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > cur then
	redis.call('SET', KEYS[2], ARGV[2])
end
return 1
