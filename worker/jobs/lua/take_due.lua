-- KEYS[1] schedule zset. ARGV: now, leased-until, limit -> ids due, re-scored to leased-until
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), id)
end
return ids
