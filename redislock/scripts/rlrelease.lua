-- Redlock release on one node. KEYS[1] lock key, KEYS[2] waiter queue,
-- KEYS[3] waiter deadlines, KEYS[4] given-up attempts. ARGV[1] the
-- attempt's key value, ARGV[2] the release channel or '', ARGV[3] the
-- waiter id to take out of the queue or '', ARGV[4] how long (ms) to refuse
-- the attempt (rlreleaseone.lua says what each means).
-- Deletes the lock if it is ours; returns 1 if it was ours, 0 if not.
--[[rlreleaseone.lua]]
return release(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
