--[[
  requeueJob: a running attempt puts its job back in the queue, to start again at a given
  time: a retry after its own upstream failure (with backoff or the server's Retry-After),
  or an interruption that is ours (graceful shutdown, our store failing). Fenced like every
  runner write. The job gets its place at once, with the defer in its estimated wait, so a
  job told to wait 30 s never shows 0.

  KEYS[1] sq:job:{id}
  KEYS[2] sq:events:{id}
  KEYS[3] sq:active
  KEYS[4] arq:in-progress:{id}     released only if it is still this attempt's lease
  KEYS[5] <queue name>             arq's queue zset: score = when the job may start (ms),
                                   less the job's priority offset (include/priority.lua)

  ARGV[1] guard ("fence:<token>")
  ARGV[2] now (ms)                  ARGV[3] start no sooner than (ms)
  ARGV[4] fields to set, JSON object of strings
  ARGV[5] event data (JSON view; its place is filled in here)
  ARGV[6] events stream max length  ARGV[7] pub/sub channel
  ARGV[8] job id
  ARGV[9] worker slots, ARGV[10] median run time (s): inputs of the estimated wait
  ARGV[11] pub/sub channel that wakes idle workers (sq:wake): they pick the job up, or set
           their timer for when it is due
  ARGV[12] priority aging (ms). A job due now gets its priority's offset, as at admission;
           a deferred one is scored at the time it may start (an offset would make it due
           at once), and ranks from then as a low job would (it ages up from there).

  Returns {1, position, estimated_wait_s} when requeued, {0} when fenced out.
]]
--@include guard
--@include record
--@include place
--@include priority

local fields = cjson.decode(ARGV[4])
local token = string.sub(ARGV[1], 7)
if redis.call("HGET", KEYS[1], "status") ~= "active" or not guard_holds(KEYS[1], ARGV[1]) then
  return {0}
end
local now, ready_at = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call("ZREM", KEYS[3], ARGV[8])
if redis.call("GET", KEYS[4]) == token then
  redis.call("DEL", KEYS[4])
end
local score = ready_at
if ready_at <= now then
  score = queue_score(now, redis.call("HGET", KEYS[1], "priority"), tonumber(ARGV[12]))
end
redis.call("ZADD", KEYS[5], score, ARGV[8])
local active = redis.call("ZCARD", KEYS[3])
local position = queued_ahead(KEYS[5], KEYS[3], ARGV[8]) + 1
local eta = queue_place(position, active, tonumber(ARGV[9]), tonumber(ARGV[10]),
  (ready_at - now) / 1000)
fields["fence"] = ""
fields["worker"] = ""
fields["position"] = tostring(position)
fields["estimated_wait_s"] = eta
write_fields(KEYS[1], fields)
emit(KEYS[2], ARGV[6], ARGV[7], ARGV[8], "progress", with_place(ARGV[5], position, eta))
redis.call("PUBLISH", ARGV[11], "requeue")
return {1, position, eta}
