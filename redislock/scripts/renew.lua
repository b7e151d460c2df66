-- Redlock renewal on one node (a single node's: srenew.lua). KEYS[1] lock
-- key. ARGV[1] owner id, ARGV[2] TTL in milliseconds.
-- Returns 1 if the lock was ours and is extended, 0 if not ours (or gone).
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and cur == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
