--[[
  finishJob: put a job in its final state (completed, failed, cancelled), release its slot,
  take it out of arq's queue, append the final event and, for a failure that is
  dead-lettered, record the DLQ entry (dropping the oldest beyond the cap), refund the daily
  quota of a job cancelled before its PixelLab call; all in one step, so no later write (a stale runner,
  arq's own clean-up, an admin's retry racing a cancel) can undo half of it.

  Guarded (include/guard.lua): a runner passes its fence; the API's cancel, the reconciler
  and the stall cap pass the revision they read. Idempotent: a job already final is left
  as it is, so a slot is never released twice.

  KEYS[1]  sq:job:{id}              KEYS[2]  sq:events:{id}
  KEYS[3]  sq:inflight              KEYS[4]  sq:active
  KEYS[5]  sq:user:{user}:inflight  KEYS[6]  sq:durations (recent run times, newest first)
  KEYS[7]  sq:dlq                   KEYS[8]  sq:dlq:{id}
  KEYS[9]  sq:inflight-users        KEYS[10] sq:dedup:{user}:{cache_key}
  KEYS[11] arq:job:{id}             KEYS[12] arq:in-progress:{id}
  KEYS[13] arq:retry:{id}           KEYS[14] <queue name>
  KEYS[15] arq:abort                KEYS[16] sq:user:{user}:generations:{day}, the counter
                                             the job was charged to (the day of its created_at)
  KEYS[17] sq:stats                 (dlq_dropped: entries dropped for the cap)
  KEYS[18] sq:webhooks              zset job_id -> when its delivery is due (ms)

  ARGV[1]  guard ("fence:<token>" or "rev:<n>")
  ARGV[2]  job id                   ARGV[3]  now (ms)
  ARGV[4]  fields to set, JSON object of strings (must include "status")
  ARGV[5]  event name (completed | failed | cancelled)
  ARGV[6]  event data (JSON)        ARGV[7]  events stream max length
  ARGV[8]  pub/sub channel          ARGV[9]  keep the finished record for (s)
  ARGV[10] run duration (s) to record, or "" for none
  ARGV[11] dead-letter entry (JSON), or "" for none
  ARGV[12] dead-letter retention (s)
  ARGV[13] dead-letter entries kept at most (the oldest beyond it are dropped)
  ARGV[14] dead-letter entry key prefix ("sq:dlq:"), to drop the entries of the oldest
  ARGV[15] "1" when the job has a callback_url: its delivery is due now (the fields carry
           its ``webhook`` state), in the same step as the final state, so it is never lost
  ARGV[16] pub/sub channel that wakes idle workers (sq:wake): "webhook", a worker delivers
           it; "abort", a cancel of a running job, whose worker cancels the attempt at once

  Refund: a job charged at admission (its record's ``charged``) and cancelled while its stage
  is queued or started, with no failed or lost attempt (``failures`` and ``stalls`` 0, so no
  call of it can have reached PixelLab), gives its charge back, once, to the counter of the
  day it was charged to; a counter already expired is left alone.

  Returns {1, "", dropped} finished now (dropped: DLQ entries dropped for the cap); {0, status} already final or gone; {-1, status} the guard
  failed (a runner fenced out, or a revision that changed: read again).
]]
--@include guard
--@include record

-- arq keeps an abort request until the worker running the job sees it; one whose worker
-- died would stay forever, so requests older than this are dropped.
local ABORT_KEEP_MS = 60000

local fields = cjson.decode(ARGV[4])
local job_id, now = ARGV[2], tonumber(ARGV[3])
local status = redis.call("HGET", KEYS[1], "status")
if status ~= "queued" and status ~= "active" then
  -- Gone or already final: still make sure no slot is left behind.
  redis.call("ZREM", KEYS[3], job_id)
  redis.call("ZREM", KEYS[4], job_id)
  redis.call("ZREM", KEYS[5], job_id)
  redis.call("HDEL", KEYS[9], job_id)
  return {0, status or ""}
end
if not guard_holds(KEYS[1], ARGV[1]) then
  return {-1, status}
end
local running = redis.call("HGET", KEYS[1], "fence") or ""
local refund = false
if fields["status"] == "cancelled" then
  local was = redis.call("HMGET", KEYS[1], "charged", "stage", "failures", "stalls")
  refund = was[1] == "1" and (was[2] == "queued" or was[2] == "started")
    and (was[3] or "0") == "0" and (was[4] or "0") == "0"
end
fields["fence"] = ""
write_fields(KEYS[1], fields)
redis.call("HDEL", KEYS[1], "position", "estimated_wait_s")
redis.call("ZREM", KEYS[3], job_id)
redis.call("ZREM", KEYS[4], job_id)
redis.call("ZREM", KEYS[5], job_id)
redis.call("HDEL", KEYS[9], job_id)
if ARGV[10] ~= "" then
  redis.call("LPUSH", KEYS[6], ARGV[10])
  redis.call("LTRIM", KEYS[6], 0, 199)
end
local dropped = 0
if ARGV[11] ~= "" then
  local retention = tonumber(ARGV[12])
  redis.call("SET", KEYS[8], ARGV[11], "EX", retention)
  redis.call("ZADD", KEYS[7], now, job_id)
  redis.call("ZREMRANGEBYSCORE", KEYS[7], "-inf", now - retention * 1000)
  -- The cap: one entry over it per write at most, so this is O(1) in the steady state.
  local over = redis.call("ZCARD", KEYS[7]) - tonumber(ARGV[13])
  if over > 0 then
    local oldest = redis.call("ZRANGE", KEYS[7], 0, over - 1)
    for _, old_id in ipairs(oldest) do
      redis.call("DEL", ARGV[14] .. old_id)
    end
    redis.call("ZREMRANGEBYRANK", KEYS[7], 0, over - 1)
    redis.call("HINCRBY", KEYS[17], "dlq_dropped", #oldest)
    dropped = #oldest
  end
end
if refund then
  redis.call("HDEL", KEYS[1], "charged")
  if tonumber(redis.call("GET", KEYS[16]) or "0") > 0 then
    redis.call("DECR", KEYS[16])
  end
end
-- Out of arq's hands: no queue entry, job, lease or try counter is left for a late write.
redis.call("ZREM", KEYS[14], job_id)
redis.call("DEL", KEYS[11], KEYS[12], KEYS[13])
redis.call("ZREMRANGEBYSCORE", KEYS[15], "-inf", now - ABORT_KEEP_MS)
if running ~= "" and string.sub(ARGV[1], 1, 6) ~= "fence:" then
  -- Finished by someone else while an attempt runs (a cancel): its worker cancels the task.
  redis.call("ZADD", KEYS[15], now, job_id)
  if status == "active" then  -- its worker acts on the request at once
    redis.call("PUBLISH", ARGV[16], "abort")
  end
end
-- A resubmission within the dedup window must not be handed a job that will never succeed.
if fields["status"] ~= "completed" and redis.call("GET", KEYS[10]) == job_id then
  redis.call("DEL", KEYS[10])
end
emit(KEYS[2], ARGV[7], ARGV[8], job_id, ARGV[5], ARGV[6])
if ARGV[15] == "1" then
  redis.call("ZADD", KEYS[18], now, job_id)
  redis.call("PUBLISH", ARGV[16], "webhook")
end
redis.call("EXPIRE", KEYS[1], ARGV[9])
redis.call("EXPIRE", KEYS[2], ARGV[9])
return {1, "", dropped}
