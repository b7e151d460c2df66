-- Redlock releases of many locks on one node (redlock_release.go), each
-- owner-checked on its own exactly as rlrelease.lua does it (the same
-- function, rlreleaseone.lua). Entry i: KEYS[4i-3..4i] and ARGV[4i-3..4i]
-- are rlrelease.lua's KEYS[1..4] and ARGV[1..4].
-- Returns, per entry, 1 if the lock was ours and is deleted, 0 if not, -1
-- if the entry failed (a key of another type where a sorted set should
-- be): one entry's failure does not fail the others.
--[[rlreleaseone.lua]]
local out = {}
for i = 1, #KEYS / 4 do
	local k, a = 4 * i - 3, 4 * i - 3
	local ok, r = pcall(release, KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
		ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
	if ok then
		out[i] = r
	else
		out[i] = -1
	end
end
return out
