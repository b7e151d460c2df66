-- Single-node status (keys: single.lua). Changes nothing.
-- Returns {held, token, waiters, holders, shared, limit, ttl}: held 1 or 0;
-- token the newest holder's (the fence counter for an exclusive holder);
-- waiters the queued waiters still trying; holders how many hold; shared 1
-- if readers hold; limit the semaphore's permits if permits are held; ttl
-- the ms until the engine drops the (longest-lived) holder.
--[[single.lua]]
local t = now()
local waiters = redis.call('ZCOUNT', KEYS[4], '(' .. t, '+inf')
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
	return {1, tonumber(redis.call('GET', KEYS[2]) or '0'), waiters, 1, 0, 0, pttl}
end
local live = redis.call('ZRANGEBYSCORE', KEYS[6], '(' .. t, '+inf', 'WITHSCORES')
if #live == 0 then
	return {0, 0, waiters, 0, 0, 0, 0}
end
local kind, limit = kindOf(live[1])
local token = 0
for i = 1, #live, 2 do
	token = math.max(token, tonumber(redis.call('HGET', KEYS[7], live[i]) or '0'))
end
local shared = 0
if kind == 's' then
	shared = 1
end
return {1, token, waiters, #live / 2, shared, limit, tonumber(live[#live]) - t}
