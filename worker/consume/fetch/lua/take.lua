-- KEYS: the queues' lists in the order to take from, then kombu's unacked hash and index.
-- ARGV: now, how many at most, how many of them at most from lists past the urgent ones, how
-- many urgent lists, tag prefix, then each list's routing key (its queue's name).
-- -> 1 if every list it looked at is empty now (else 0: a limit stopped it), then tag, raw
-- message, tag, raw message...: each taken message is in the unacked hash, in the form kombu's
-- restore reads ([message, exchange, routing key]), before the script returns.
local n = #KEYS - 2
local unacked, index = KEYS[n + 1], KEYS[n + 2]
local now, want, other, urgent = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local prefix = ARGV[5]
local out = {1}
local taken = 0
for i = 1, n do
  if taken >= want then out[1] = 0 break end
  local wanted = want - taken
  if i > urgent then
    if other <= 0 then out[1] = 0 break end
    wanted = math.min(wanted, other)
  end
  local items = redis.call('RPOP', KEYS[i], wanted)
  if items then
    if #items >= wanted then out[1] = 0 end
    if i > urgent then other = other - #items end
    for _, raw in ipairs(items) do
      taken = taken + 1
      local tag = prefix .. taken
      redis.call('HSET', unacked, tag, '[' .. raw .. ',"",' .. cjson.encode(ARGV[5 + i]) .. ']')
      redis.call('ZADD', index, now, tag)
      out[#out + 1] = tag
      out[#out + 1] = raw
    end
  end
end
return out
