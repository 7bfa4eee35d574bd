-- KEYS: schedule zset, then job hash and payload key of each job. ARGV: the call's nonce, ttl
-- of a withdrawn state (0: delete), then the job ids -> each job this call recorded is undone:
-- out of the schedule, its payload dropped, its state deleted (nothing of it was published) or
-- `withdrawn` (a copy may have reached the broker in a publish whose reply was lost: the claim
-- skips it, and the same id may be enqueued again by its owner) -> the ids left alone because a
-- worker took them already (no longer queued or scheduled): they were enqueued after all
local kept = {}
for i = 3, #ARGV do
  local key = KEYS[2 * (i - 2)]
  local enq, st = unpack(redis.call('HMGET', key, 'enq', 'state'))
  if enq == ARGV[1] and st ~= 'queued' and st ~= 'scheduled' then
    kept[#kept + 1] = ARGV[i]
  elseif enq == ARGV[1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('DEL', KEYS[2 * (i - 2) + 1])
    if tonumber(ARGV[2]) > 0 then
      redis.call('HSET', key, 'state', 'withdrawn')
      redis.call('EXPIRE', key, tonumber(ARGV[2]))
    else
      redis.call('DEL', key)
    end
  end
end
return kept
