-- KEYS[1] job hash, KEYS[2] the event stream. ARGV: ttl, the fields as one JSON object of
-- strings, the stream's MINID (older entries are trimmed), then an owner and an event's JSON
-- per event -> the final state and the events that report it in one atomic write. (One JSON
-- argument instead of a pair of arguments per field: redis-py packs each argument in Python,
-- which cost more than the rest of the write.)
local flat = {}
for name, value in pairs(cjson.decode(ARGV[2])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('HDEL', KEYS[1], 'pending', 'holder')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MINID', ARGV[3], '*', 'o', ARGV[i], 'd', ARGV[i + 1])
end
return 1
