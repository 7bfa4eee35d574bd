-- KEYS[1] the history writer's lease. ARGV: this writer ("standalone:<id>" or
-- "embedded:<id>"), the lease in ms -> 1 when this writer holds the lease now (taken or
-- renewed), else 0. One writer in the fleet at a time; a standalone scheduler's takes it from
-- a delivery worker's embedded one, never the reverse.
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1]
   or (string.sub(ARGV[1], 1, 11) == 'standalone:' and string.sub(holder, 1, 9) == 'embedded:') then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
