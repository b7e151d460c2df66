-- Single-node SetValue (keys: single.lua; single.lua itself is not needed).
-- ARGV[1] owner id, ARGV[2] the new value ('' for none).
-- Replaces the value kept with the owner's exclusive hold, for as long as
-- the hold has left, and tells the observers. Returns 1, or 0 if the owner
-- does not hold the lock (nothing changed).
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if not ok or cur ~= ARGV[1] then
	return 0
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl <= 0 then
	return 0
end
if ARGV[2] == '' then
	redis.call('DEL', KEYS[8])
else
	redis.call('SET', KEYS[8], ARGV[1] .. ' ' .. ARGV[2], 'PX', pttl)
end
if redis.call('EXISTS', KEYS[10]) == 1 then
	redis.call('PUBLISH', KEYS[1] .. ':holder', '')
end
return 1
