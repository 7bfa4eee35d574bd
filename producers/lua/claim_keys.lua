-- KEYS: idempotency keys. ARGV: pending ttl, then the pending value ("p:<id>") of each key ->
-- the value each key holds now: its own when this call set it, '' when it lapsed meanwhile
local out = {}
for i, key in ipairs(KEYS) do
  local mine = ARGV[i + 1]
  if redis.call('SET', key, mine, 'NX', 'EX', ARGV[1]) then
    out[i] = mine
  else
    out[i] = redis.call('GET', key) or ''
  end
end
return out
