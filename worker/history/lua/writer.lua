-- KEYS[1] the lease of the history writer of one shard. ARGV: this writer ("standalone:<id>"
-- or "embedded:<id>"), the lease in ms, "1" to give it up -> 1 when this writer holds the lease
-- now (taken or renewed), else 0. One writer per shard at a time; a standalone scheduler's
-- takes it from a delivery worker's embedded one, never the reverse.
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == '1' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if not holder or holder == ARGV[1]
   or (string.sub(ARGV[1], 1, 11) == 'standalone:' and string.sub(holder, 1, 9) == 'embedded:') then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
