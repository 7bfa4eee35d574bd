-- KEYS: one hash per (scope, rate). ARGV: now, then per key: count, window, buckets.
-- -> "0" (allowed and counted in every window) or the time (string) the job may try again
local now = tonumber(ARGV[1])
local due = 0
local current = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i * 3 - 1])
  local window = tonumber(ARGV[i * 3])
  local n = tonumber(ARGV[i * 3 + 1])
  local size = window / n
  local idx = math.floor(now / size)
  current[i] = idx
  local raw = redis.call('HGETALL', key)
  local total, slot = 0, 0
  local buckets = {}
  for j = 1, #raw, 2 do
    if raw[j] == 'slot' then
      slot = tonumber(raw[j + 1])
    else
      local b = tonumber(raw[j])
      if b < idx - n then
        redis.call('HDEL', key, raw[j])
      else
        local c = tonumber(raw[j + 1])
        total = total + c
        table.insert(buckets, {b, c})
      end
    end
  end
  if total + 1 > limit then
    table.sort(buckets, function(x, y) return x[1] < y[1] end)
    local free_at = now + window
    local freed = 0
    for _, bc in ipairs(buckets) do
      freed = freed + bc[2]
      if total - freed + 1 <= limit then
        free_at = (bc[1] + n + 1) * size
        break
      end
    end
    local at = math.max(free_at, slot)
    redis.call('HSET', key, 'slot', tostring(at + window / limit))
    redis.call('PEXPIRE', key, math.ceil((at - now + window) * 1000) + 1000)
    if at > due then due = at end
  end
end
if due > 0 then return tostring(due) end
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, string.format('%d', current[i]), 1)
  local ttl = redis.call('PTTL', key)
  local want = math.ceil(tonumber(ARGV[i * 3]) * 1000) + 1000
  if ttl < want then redis.call('PEXPIRE', key, want) end
end
return '0'
