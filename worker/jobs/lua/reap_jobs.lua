-- KEYS: job hashes of a dead batch (of one shard). ARGV: now, batch id, then the job ids (same
-- order as KEYS) -> ids of the jobs to publish again: `queued` ones, and `sending` ones the
-- batch held (released: the next claim sees them as uncertain)
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local st = redis.call('HGET', k, 'state')
  if st == 'queued' then
    table.insert(out, ARGV[i + 2])
  elseif st == 'sending' then
    local holder = redis.call('HGET', k, 'holder')
    local lease = tonumber(redis.call('HGET', k, 'lease_until') or '0')
    if holder == ARGV[2] or (not holder and lease <= now) then
      redis.call('HSET', k, 'lease_until', 0)
      redis.call('HDEL', k, 'holder')
      table.insert(out, ARGV[i + 2])
    end
  end
end
return out
