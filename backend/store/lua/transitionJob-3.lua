--[[
  transitionJob: move a job that is still in flight to a new state (started, a progress
  stage, back to queued for a retry or a shutdown) and append the event, atomically.

  KEYS[1] sq:job:{id}      the job record
  KEYS[2] sq:events:{id}   the job's event stream
  KEYS[3] sq:active        zset job_id -> started at (ms)

  ARGV[1] job id
  ARGV[2] allowed current statuses, comma separated (e.g. "queued,active")
  ARGV[3] "add" | "rem" | "keep": what to do with the job in sq:active
  ARGV[4] now (ms)
  ARGV[5] fields to set, JSON object of strings
  ARGV[6] event name ("progress")
  ARGV[7] event data (JSON)
  ARGV[8] events stream max length
  ARGV[9] pub/sub channel

  Returns 1 when applied, 0 when the job is gone or not in an allowed status.
]]
local status = redis.call("HGET", KEYS[1], "status")
if not status or not string.find("," .. ARGV[2] .. ",", "," .. status .. ",", 1, true) then
  return 0
end
local flat = {}
for name, value in pairs(cjson.decode(ARGV[5])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
-- A place in the queue is only ever current: starting makes it meaningless, and a job
-- put back in the queue gets a new one from the next announcePositions.
redis.call("HDEL", KEYS[1], "position", "estimated_wait_s")
redis.call("HSET", KEYS[1], unpack(flat))
if ARGV[3] == "add" then
  redis.call("ZADD", KEYS[3], ARGV[4], ARGV[1])
elseif ARGV[3] == "rem" then
  redis.call("ZREM", KEYS[3], ARGV[1])
end
local stream_id = redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[8], "*",
  "event", ARGV[6], "data", ARGV[7])
redis.call("PUBLISH", ARGV[9], ARGV[1] .. " " .. stream_id .. " " .. ARGV[6] .. " " .. ARGV[7])
return 1
