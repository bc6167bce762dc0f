--[[
  cancelJob: for a queued job, take it off arq's queue; for a running one, ask arq to abort
  it. The caller then finishes the job with finishJob (which releases the slot).

  KEYS[1] sq:job:{id}
  KEYS[2] <queue name>       arq's queue zset
  KEYS[3] arq:abort          arq's zset of jobs to abort
  KEYS[4] arq:job:{id}       arq's serialized job

  ARGV[1] job id
  ARGV[2] now (ms)

  Returns 1 cancelled while queued, 2 abort requested while running,
          -3 already finished (status in the second slot), -4 no such job.
]]
local status = redis.call("HGET", KEYS[1], "status")
if not status then
  return {-4, ""}
end
if status == "queued" then
  redis.call("ZREM", KEYS[2], ARGV[1])
  redis.call("DEL", KEYS[4])
  return {1, status}
end
if status == "active" then
  redis.call("ZADD", KEYS[3], ARGV[2], ARGV[1])
  return {2, status}
end
return {-3, status}
