-- KEYS[1] in-flight zset, KEYS[2] reaping lock, KEYS[3..] job hashes.
-- ARGV: now, batch id, lock seconds, then the job ids (same order as KEYS[3..])
-- -> {'skip'} (renewed, gone, or another reaper has it) or {'reap', ids of the batch's jobs to
--    publish again: `queued` ones, and `sending` ones it held}
local now = tonumber(ARGV[1])
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score or tonumber(score) > now then return {'skip'} end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[3])) then return {'skip'} end
local out = {'reap'}
for i = 3, #KEYS do
  local k = KEYS[i]
  local st = redis.call('HGET', k, 'state')
  if st == 'queued' then
    table.insert(out, ARGV[i + 1])
  elseif st == 'sending' then
    local holder = redis.call('HGET', k, 'holder')
    local lease = tonumber(redis.call('HGET', k, 'lease_until') or '0')
    if holder == ARGV[2] or (not holder and lease <= now) then
      redis.call('HSET', k, 'lease_until', 0)
      redis.call('HDEL', k, 'holder')
      table.insert(out, ARGV[i + 1])
    end
  end
end
return out
