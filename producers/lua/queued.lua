-- KEYS: job hashes (then the broker lists that ARGV's commands push to). ARGV: enqueued_at, the
-- call's nonce, one JSON array of [owner, channel, subject, identity, recipients, ttl] per job
-- in KEYS order, then (optionally) broker commands, each as its name, its argument count and
-- its arguments -> the positions (1-based) of jobs whose id exists already (another job's), in
-- which case nothing is written; else every job recorded as `queued` with its own TTL, then the
-- broker commands run: a call's states and its task message are written together or not at all.
-- An id stays taken while its state lives, except by its own owner once `withdrawn` (an enqueue
-- that failed, see UNDO): the caller was told it was not enqueued and may send it again.
local jobs = cjson.decode(ARGV[3])
local taken = {}
-- this call's own earlier run (its reply lost): written already, states and task together
if redis.call('HGET', KEYS[1], 'enq') == ARGV[2] then return taken end
for i = 1, #jobs do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 and redis.call('HGET', key, 'enq') ~= ARGV[2] then
    local st, owner = unpack(redis.call('HMGET', key, 'state', 'owner'))
    if st ~= 'withdrawn' or owner ~= jobs[i][1] then taken[#taken + 1] = i end
  end
end
if #taken > 0 then return taken end
for i = 1, #jobs do
  local key, j = KEYS[i], jobs[i]
  redis.call('HSET', key, 'state', 'queued', 'owner', j[1], 'channel', j[2],
             'subject', j[3], 'identity', j[4], 'recipients', tostring(j[5]),
             'attempts', '0', 'enqueued_at', ARGV[1], 'enq', ARGV[2])
  redis.call('EXPIRE', key, j[6])
end
local a = 4
while a <= #ARGV do
  local n = tonumber(ARGV[a + 1])
  redis.call(ARGV[a], unpack(ARGV, a + 2, a + 1 + n))
  a = a + 2 + n
end
return taken
