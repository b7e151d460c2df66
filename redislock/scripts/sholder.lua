-- Single-node exclusive holder (keys: single.lua; single.lua itself is not
-- needed). ARGV[1] '0' to change nothing, or, for an observer, how long
-- (ms) from now the changes of the holder are to be published (KEYS[10]).
-- Returns {token, value, pttl}: the exclusive holder's token (the fence
-- counter: nothing else is granted while it holds), its value ('' for
-- none) and the ms its hold has left; {0, '', 0} if nobody holds the lock
-- exclusively.
if ARGV[1] ~= '0' then
	redis.call('SET', KEYS[10], '1', 'PX', ARGV[1])
end
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if not ok or not cur then
	return {0, '', 0}
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl <= 0 then
	return {0, '', 0}
end
local value = ''
local v = redis.call('GET', KEYS[8])
if v and string.sub(v, 1, #cur + 1) == cur .. ' ' then
	value = string.sub(v, #cur + 2)
end
return {tonumber(redis.call('GET', KEYS[2]) or '0'), value, pttl}
