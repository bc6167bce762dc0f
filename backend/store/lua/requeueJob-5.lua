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
  KEYS[5] <queue name>             arq's queue zset: score = when the job may start (ms)

  ARGV[1] guard ("fence:<token>")
  ARGV[2] now (ms)                  ARGV[3] start no sooner than (ms)
  ARGV[4] fields to set, JSON object of strings
  ARGV[5] event data (JSON view; its place is filled in here)
  ARGV[6] events stream max length  ARGV[7] pub/sub channel
  ARGV[8] job id
  ARGV[9] worker slots, ARGV[10] median run time (s): inputs of the estimated wait
  ARGV[11] pub/sub channel that wakes idle workers (sq:wake): they pick the job up, or set
           their timer for when it is due

  Returns {1, position, estimated_wait_s} when requeued, {0} when fenced out.
]]
--@include guard
--@include record
--@include place

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
redis.call("ZADD", KEYS[5], ready_at, ARGV[8])
local active = redis.call("ZCARD", KEYS[3])
local position = math.max(redis.call("ZRANK", KEYS[5], ARGV[8]) - active, 0) + 1
local eta = queue_place(position, active, tonumber(ARGV[9]), tonumber(ARGV[10]),
  (ready_at - now) / 1000)
fields["fence"] = ""
fields["worker"] = ""
fields["position"] = tostring(position)
fields["estimated_wait_s"] = eta
write_fields(KEYS[1], fields)
emit(KEYS[2], ARGV[6], ARGV[7], ARGV[8], "progress", with_place(ARGV[5], position, eta))
redis.call("PUBLISH", ARGV[11], "")
return {1, position, eta}
