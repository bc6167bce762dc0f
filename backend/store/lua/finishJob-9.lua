--[[
  finishJob: put a job in its final state (completed, failed, cancelled), release its slot,
  append the final event and, for a failure that is dead-lettered, record the DLQ entry.
  Idempotent: a job already finished is left as it is, so a slot is never released twice.

  KEYS[1] sq:job:{id}
  KEYS[2] sq:events:{id}
  KEYS[3] sq:inflight
  KEYS[4] sq:active
  KEYS[5] sq:user:{user}:inflight
  KEYS[6] sq:durations          list of recent run durations (s), newest first
  KEYS[7] sq:dlq
  KEYS[8] sq:dlq:{id}
  KEYS[9] sq:inflight-users

  ARGV[1]  job id
  ARGV[2]  now (ms)
  ARGV[3]  fields to set, JSON object of strings (must include "status")
  ARGV[4]  event name (completed | failed | cancelled)
  ARGV[5]  event data (JSON)
  ARGV[6]  events stream max length
  ARGV[7]  pub/sub channel
  ARGV[8]  keep the finished record for (s)
  ARGV[9]  run duration (s) to record, or "" for none
  ARGV[10] dead-letter entry (JSON), or "" for none
  ARGV[11] dead-letter retention (s)

  Returns 1 when finished now, 0 when it was already finished (or is gone).
]]
local status = redis.call("HGET", KEYS[1], "status")
if status ~= "queued" and status ~= "active" then
  -- Gone or already final: still make sure no slot is left behind.
  redis.call("ZREM", KEYS[3], ARGV[1])
  redis.call("ZREM", KEYS[4], ARGV[1])
  redis.call("ZREM", KEYS[5], ARGV[1])
  redis.call("HDEL", KEYS[9], ARGV[1])
  return 0
end
local flat = {}
for name, value in pairs(cjson.decode(ARGV[3])) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call("HSET", KEYS[1], unpack(flat))
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("ZREM", KEYS[4], ARGV[1])
redis.call("ZREM", KEYS[5], ARGV[1])
redis.call("HDEL", KEYS[9], ARGV[1])
if ARGV[9] ~= "" then
  redis.call("LPUSH", KEYS[6], ARGV[9])
  redis.call("LTRIM", KEYS[6], 0, 199)
end
if ARGV[10] ~= "" then
  local now = tonumber(ARGV[2])
  local retention = tonumber(ARGV[11])
  redis.call("SET", KEYS[8], ARGV[10], "EX", retention)
  redis.call("ZADD", KEYS[7], now, ARGV[1])
  redis.call("ZREMRANGEBYSCORE", KEYS[7], "-inf", now - retention * 1000)
end
local stream_id = redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[6], "*",
  "event", ARGV[4], "data", ARGV[5])
redis.call("EXPIRE", KEYS[1], ARGV[8])
redis.call("EXPIRE", KEYS[2], ARGV[8])
redis.call("PUBLISH", ARGV[7], ARGV[1] .. " " .. stream_id .. " " .. ARGV[4] .. " " .. ARGV[5])
return 1
