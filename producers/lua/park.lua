-- KEYS: per job its state hash, its payload and its shard's schedule. ARGV: per job its id, due
-- time, ttl and payload JSON -> how many were parked.
-- A job with a future send_at waits in the schedule once recorded as queued. Only while it is
-- still queued: a cancel that came between its record and this call (a producer that chose
-- the id, cancelled from elsewhere) was answered `cancelled`, and stays so.
local parked = 0
for i = 1, #KEYS / 3 do
  local job, payload, schedule = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local id, due, ttl, body = ARGV[4 * i - 3], ARGV[4 * i - 2], tonumber(ARGV[4 * i - 1]), ARGV[4 * i]
  if redis.call('HGET', job, 'state') == 'queued' then
    redis.call('SET', payload, body, 'EX', ttl)
    redis.call('HSET', job, 'state', 'scheduled', 'next_at', due)
    redis.call('EXPIRE', job, ttl)
    redis.call('ZADD', schedule, due, id)
    parked = parked + 1
  end
end
return parked
