-- KEYS[1] job hash, KEYS[2] its payload, KEYS[3] its shard's schedule, KEYS[4] its shard's event
-- stream. ARGV: job id, due time, ttl, the payload JSON, the fields to set as one JSON object of
-- strings, the fields to delete as one JSON array, attempts to add (-1 for a deferral, which
-- uses none), seconds to add to deferred_s, the stream's MINID, then an owner and an event's JSON
-- per event -> 1. A job parked in the schedule (a retry, a rate-limit deferral) in one atomic
-- write: its state, its payload, its place in the schedule and the events that report it.
local flat = {}
for name, value in pairs(cjson.decode(ARGV[5])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ttl)
redis.call('HSET', KEYS[1], unpack(flat))
local gone = cjson.decode(ARGV[6])
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
if ARGV[7] ~= '0' then redis.call('HINCRBY', KEYS[1], 'attempts', tonumber(ARGV[7])) end
if ARGV[8] ~= '0' then redis.call('HINCRBYFLOAT', KEYS[1], 'deferred_s', ARGV[8]) end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
for i = 10, #ARGV, 2 do
  redis.call('XADD', KEYS[4], 'MINID', ARGV[9], '*', 'o', ARGV[i], 'd', ARGV[i + 1])
end
return 1
