-- Redlock status on one node (a single node's: sstatus.lua). KEYS[1] lock
-- key, KEYS[2] fence counter, KEYS[3] the waiters' deadlines.
-- Returns {pttl, fence, waiters}: pttl -2 if the lock is free; waiters
-- counts the queued waiters that are still trying.
local pttl = redis.call('PTTL', KEYS[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return {pttl, tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')}
