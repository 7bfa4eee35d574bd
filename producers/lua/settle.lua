-- KEYS: idempotency keys. ARGV: the job id and a ttl for each key -> every key still pending
-- for that job is confirmed (set to the id, with its ttl), or released (deleted) when ttl is 0
for i, key in ipairs(KEYS) do
  local id = ARGV[2 * i - 1]
  local ttl = tonumber(ARGV[2 * i])
  if redis.call('GET', key) == 'p:' .. id then
    if ttl > 0 then redis.call('SET', key, id, 'EX', ttl) else redis.call('DEL', key) end
  end
end
return #KEYS
