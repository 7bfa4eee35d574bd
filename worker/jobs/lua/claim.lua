-- KEYS[1] job hash. ARGV: now, lease seconds, ttl, owner, channel, holder batch id ("" when
-- none), then what the caller knows of the job's current holder: "" (nothing yet) or
-- "<batch id> <its lease end>" ("-": not in flight), read from the in-flight set
-- (worker/jobs/inflight.py), which lives in another slot than the job
-- -> {decision, attempts, pending recipients json or "", enqueued_at, seconds deferred by limits}
--    or {'holder', batch id}: the job is held by that batch, whose lease the caller looks up
--    and passes in a second call
local k = KEYS[1]
local now = tonumber(ARGV[1])
local st = redis.call('HGET', k, 'state')
if st == 'sent' or st == 'failed' or st == 'bounced' or st == 'suppressed' or st == 'cancelled'
   or st == 'withdrawn' then
  return {'done', st, '', '', ''}
end
local decision = 'go'
if not st or redis.call('HGET', k, 'vanished') then
  -- every job is recorded before it is published: no state means it expired or was lost (it
  -- may even have been sent). Not sent blindly: held like a claim, to be recorded as failed
  if st == 'sending' and tonumber(redis.call('HGET', k, 'lease_until') or '0') > now then
    return {'busy', '', '', '', ''}
  end
  redis.call('HSET', k, 'state', 'sending', 'vanished', '1', 'owner', ARGV[4],
             'channel', ARGV[5], 'lease_until', now + tonumber(ARGV[2]), 'updated_at', ARGV[1])
  redis.call('EXPIRE', k, tonumber(ARGV[3]))
  return {'vanished', '0', '', ARGV[1], '0'}
end
if st == 'sending' then
  local lease = tonumber(redis.call('HGET', k, 'lease_until') or '0')
  -- the holder's batch lease (renewed while its worker process lives) decides when it has one
  local holder = redis.call('HGET', k, 'holder')
  if holder then
    local known, alive = string.match(ARGV[7], '^(%S+) (%S+)$')
    if known ~= holder then return {'holder', holder, '', '', ''} end
    if alive ~= '-' then lease = tonumber(alive) end
  end
  if lease > now then return {'busy', '', '', '', ''} end
  decision = 'uncertain'
elseif st == 'retrying' or st == 'scheduled' or st == 'deferred' then
  local due = tonumber(redis.call('HGET', k, 'next_at') or '0')
  -- a stale copy of the task (broker redelivery) must not run a retry early
  if due > now + 1 then return {'wait', '', '', '', ''} end
end
local attempts = redis.call('HINCRBY', k, 'attempts', 1)
redis.call('HSET', k, 'state', 'sending', 'lease_until', now + tonumber(ARGV[2]),
           'updated_at', ARGV[1])
if ARGV[6] ~= '' then redis.call('HSET', k, 'holder', ARGV[6]) else redis.call('HDEL', k, 'holder') end
redis.call('EXPIRE', k, tonumber(ARGV[3]))
return {decision, tostring(attempts), redis.call('HGET', k, 'pending') or '',
        redis.call('HGET', k, 'enqueued_at') or ARGV[1], redis.call('HGET', k, 'deferred_s') or '0'}
