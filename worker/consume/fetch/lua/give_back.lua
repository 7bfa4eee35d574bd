-- KEYS[1] unacked hash, KEYS[2] index, KEYS[3] the list to return the message to. ARGV: tag,
-- raw message -> the message is back at the end of its list that is taken first
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[2])
return 1
