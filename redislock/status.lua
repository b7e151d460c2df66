-- KEYS[1] lock key, KEYS[2] fence counter.
-- Returns {pttl, fence}: pttl -2 if the lock is free.
local pttl = redis.call('PTTL', KEYS[1])
return {pttl, tonumber(redis.call('GET', KEYS[2]) or '0')}
