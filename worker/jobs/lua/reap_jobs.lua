-- KEYS: job hashes of a dead batch (of one shard), then each job's schedule (same order). ARGV:
-- now, batch id, then the job ids (same order) -> ids of the jobs to publish again: `queued`
-- ones; `sending` ones the batch held (released: the next claim sees them as uncertain); and
-- waiting ones (a retry, a send_at, a deferral) that the scheduler published and the batch took
-- before its claim: out of the schedule, they are nowhere else (a claim of a copy not yet due
-- puts it back in the schedule)
local now = tonumber(ARGV[1])
local n = #KEYS / 2
local out = {}
for i = 1, n do
  local k = KEYS[i]
  local id = ARGV[i + 2]
  local st = redis.call('HGET', k, 'state')
  if st == 'queued' then
    table.insert(out, id)
  elseif st == 'sending' then
    local holder = redis.call('HGET', k, 'holder')
    local lease = tonumber(redis.call('HGET', k, 'lease_until') or '0')
    if holder == ARGV[2] or (not holder and lease <= now) then
      redis.call('HSET', k, 'lease_until', 0)
      redis.call('HDEL', k, 'holder')
      table.insert(out, id)
    end
  elseif st == 'retrying' or st == 'scheduled' or st == 'deferred' then
    if not redis.call('ZSCORE', KEYS[n + i], id) then table.insert(out, id) end
  end
end
return out
