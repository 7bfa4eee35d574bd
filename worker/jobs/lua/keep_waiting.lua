-- KEYS[1] job hash, KEYS[2] its payload, KEYS[3] its shard's schedule. ARGV: job id, now, ttl,
-- the payload JSON -> 1 when the job was put back in the schedule, else 0.
-- A claim answered `wait` (the job is not due yet by this worker's clock) for a copy that the
-- scheduler published, perhaps on a host whose clock is ahead: once that copy is acknowledged,
-- a job still waiting and no longer in its schedule would be nowhere. Put back where it was:
-- due at its next_at, with its payload. A job still in the schedule, or no longer waiting
-- (claimed, cancelled, final), is left as it is.
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'retrying' and st ~= 'scheduled' and st ~= 'deferred' then return 0 end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
local due = tonumber(redis.call('HGET', KEYS[1], 'next_at') or ARGV[2])
local ttl = math.floor(tonumber(ARGV[3]) + math.max(due - tonumber(ARGV[2]), 0)) + 1
redis.call('SET', KEYS[2], ARGV[4], 'EX', ttl, 'NX')
local left = redis.call('TTL', KEYS[1])
if left >= 0 and left < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
redis.call('ZADD', KEYS[3], due, ARGV[1])
return 1
