-- KEYS[1] the batch's JSON, KEYS[2] in-flight zset. ARGV: JSON, ttl, lease end, batch id
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
