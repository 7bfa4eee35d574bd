-- KEYS: job hash, schedule zset, the job's scheduled payload, the fleet's counters.
-- ARGV: now, job id -> the job's state after the call ('cancelled' when it is, now or before;
-- '' when unknown). Counted once per job, as the event jobs_cancelled (/metrics).
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'queued' or st == 'retrying' or st == 'scheduled' or st == 'deferred' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated_at', ARGV[1])
  redis.call('HDEL', KEYS[1], 'next_at')
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[3])
  redis.call('HINCRBY', KEYS[4], 'jobs_cancelled', 1)
  return 'cancelled'
end
return st or ''
