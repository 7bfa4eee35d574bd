-- KEYS[1] job hash. ARGV: ttl, the fields as one JSON object of strings -> the final state in
-- one atomic write. (One JSON argument instead of a pair of arguments per field: redis-py packs
-- each argument in Python, which cost more than the rest of the write.)
local flat = {}
for name, value in pairs(cjson.decode(ARGV[2])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('HDEL', KEYS[1], 'pending', 'holder')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
