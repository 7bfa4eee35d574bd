-- KEYS: job hash, its shard's schedule zset, the job's scheduled payload, its shard's event
-- stream. ARGV: now, job id, the stream's MINID, then the owner and JSON of the job's
-- message.cancelled event (none: no event) -> the job's state after the call ('cancelled' when
-- it was before; '+cancelled' when this call cancelled it, which the caller counts once as
-- jobs_cancelled for /metrics; '' when unknown); the event is written only by the call that
-- cancels.
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'queued' or st == 'retrying' or st == 'scheduled' or st == 'deferred' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated_at', ARGV[1])
  redis.call('HDEL', KEYS[1], 'next_at')
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[3])
  if ARGV[4] then
    redis.call('XADD', KEYS[4], 'MINID', ARGV[3], '*', 'o', ARGV[4], 'd', ARGV[5])
  end
  return '+cancelled'
end
return st or ''
