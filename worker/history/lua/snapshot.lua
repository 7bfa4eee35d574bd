-- KEYS: job hashes. ARGV: none -> one JSON array with, per key in KEYS order, its fields and
-- values as one flat array ({} when the job is gone): the state hashes of a history batch in
-- one reply, parsed once, instead of a reply per job.
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
end
return cjson.encode(out)
