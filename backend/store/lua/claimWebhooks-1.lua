--[[
  claimWebhooks: a worker takes the webhook deliveries that are due, for one lease. Each
  claimed entry is re-scored to now + lease, so no other worker takes it meanwhile; a worker
  that dies mid-delivery leaves it to come due again when the lease ends (at least once).

  KEYS[1] sq:webhooks   zset job_id -> when its delivery is due (ms)

  ARGV[1] now (ms)   ARGV[2] lease (ms)   ARGV[3] most entries to claim

  Returns {next due (ms) after the claim, or "" when none, claimed job ids...}, the longest
  due first; the next due time tells the worker how long it may sleep.
]]
local now = tonumber(ARGV[1])
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, tonumber(ARGV[3]))
for _, job_id in ipairs(due) do
  redis.call("ZADD", KEYS[1], now + tonumber(ARGV[2]), job_id)
end
local next_due = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")[2] or ""
local reply = {next_due}
for _, job_id in ipairs(due) do
  reply[#reply + 1] = job_id
end
return reply
