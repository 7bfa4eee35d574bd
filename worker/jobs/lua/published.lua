-- KEYS[1] schedule zset, KEYS[2..] payload keys. ARGV: leased-until, then the job ids.
-- A job re-scheduled meanwhile (its new attempt already failed and scheduled a retry) has another
-- score and a new payload: both stay.
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('DEL', KEYS[i])
  end
end
return 0
