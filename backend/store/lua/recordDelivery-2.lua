--[[
  recordDelivery: how a webhook delivery attempt ended. The job's ``webhook`` field (its
  state, attempts, last status) is set and the delivery is either done (out of the set) or
  due again at a later time. Only a job still in a final state is written: one requeued
  since (an admin's DLQ retry) gets a delivery of its own when it ends again, and this one
  is dropped. No ``rev`` bump: the state of the job is not changed.

  KEYS[1] sq:webhooks   zset job_id -> when its delivery is due (ms)
  KEYS[2] sq:job:{id}

  ARGV[1] job id   ARGV[2] the webhook state (JSON)   ARGV[3] due again at (ms), "" when done
  ARGV[4] the record's finished_at as the delivery read it: a job that ended again since
          has a new delivery due, which this one must leave alone

  Returns 1 written, 0 dropped (the job is gone or no longer final), -1 superseded.
]]
local state = redis.call("HMGET", KEYS[2], "status", "finished_at")
if state[1] ~= "completed" and state[1] ~= "failed" and state[1] ~= "cancelled" then
  redis.call("ZREM", KEYS[1], ARGV[1])
  return 0
end
if state[2] ~= ARGV[4] then
  return -1
end
redis.call("HSET", KEYS[2], "webhook", ARGV[2])
if ARGV[3] == "" then
  redis.call("ZREM", KEYS[1], ARGV[1])
else
  redis.call("ZADD", KEYS[1], tonumber(ARGV[3]), ARGV[1])
end
return 1
