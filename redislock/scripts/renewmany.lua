-- Renewal of many locks on one node (batch.go), each owner-checked on its
-- own exactly as srenew.lua (a single node) or renew.lua (Redlock) would.
-- Entry i: KEYS[2i-1] the lock key (for a shared hold: the shared
-- holders), KEYS[2i] its companion (the value key; the shared holders'
-- tokens; for Redlock the lock key again); ARGV[3i-2] the owner id (for
-- Redlock the key's value), ARGV[3i-1] the TTL in milliseconds, ARGV[3i]
-- the kind: 'x' an exclusive hold, 'v' an exclusive hold that may have a
-- value, 's' a reader or a permit, 'r' a Redlock key.
-- Returns, per entry, 1 if the owner held and the hold is extended, 0 if
-- not (nothing changed: a shared hold that ran out is not extended; a key
-- of another type where the lock's was counts as not held).
local function extend(key, ms)
	if redis.call('PTTL', key) < ms then
		redis.call('PEXPIRE', key, ms)
	end
end
local out = {}
local t
for i = 1, #KEYS / 2 do
	local key, aux = KEYS[2 * i - 1], KEYS[2 * i]
	local owner, ttl, kind = ARGV[3 * i - 2], tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
	local r = 0
	if kind == 's' then
		if not t then
			local now = redis.call('TIME')
			t = now[1] * 1000 + math.floor(now[2] / 1000)
		end
		-- pcall: one key of another type must not fail the whole batch
		-- (the hold it stood for is gone: 0).
		local ok, exp = pcall(redis.call, 'ZSCORE', key, owner)
		if ok and exp and tonumber(exp) > t then
			redis.call('ZADD', key, t + ttl, owner)
			extend(key, ttl)
			extend(aux, ttl)
			r = 1
		end
	else
		local ok, cur = pcall(redis.call, 'GET', key)
		if ok and cur == owner then
			if kind == 'v' then
				redis.call('PEXPIRE', aux, ttl)
			end
			r = redis.call('PEXPIRE', key, ttl)
		end
	end
	out[i] = r
end
return out
