-- KEYS[1] in-flight zset, KEYS[2] the batch's reaping lock. ARGV: now, batch id, lock seconds
-- -> 1 when the batch's lease ran out and this caller holds the lock now, else 0 (renewed,
--    gone, or another reaper has it)
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score or tonumber(score) > tonumber(ARGV[1]) then return 0 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[3])) then return 0 end
return 1
