-- KEYS[1] lock key. ARGV[1] owner id, ARGV[2] release channel.
-- Deletes the lock if it is ours and wakes the waiters; returns 1 if it was
-- ours, 0 if not (nothing changed).
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and cur == ARGV[1] then
	redis.call('DEL', KEYS[1])
	redis.call('PUBLISH', ARGV[2], '')
	return 1
end
return 0
