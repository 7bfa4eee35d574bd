-- KEYS[1] the batch's JSON, KEYS[2] in-flight zset. ARGV: batch id
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
