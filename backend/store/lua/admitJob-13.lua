--[[
  admitJob: decide dedup, the daily quota, per-user cap and global cap together, and if
  admitted record the slot, the quota charge, the job record and the arq job in one atomic
  step (so no crash can leave a slot without a queued job, a queued job without a slot, or a
  charge without a job).

  KEYS[1]  sq:dedup:{user}:{cache_key}   string, job id, PX = dedup window
  KEYS[2]  sq:inflight                   zset job_id -> admitted at (ms)
  KEYS[3]  sq:user:{user}:inflight       zset job_id -> admitted at (ms)
  KEYS[4]  sq:job:{id}                   hash, the job record
  KEYS[5]  arq:job:{id}                  arq's serialized job
  KEYS[6]  <queue name>                  arq's queue zset
  KEYS[7]  sq:user:{user}:jobs           zset of the user's recent jobs
  KEYS[8]  sq:events:{id}                stream of the job's events
  KEYS[9]  sq:dlq                        zset of dead-lettered jobs (when retrying one)
  KEYS[10] sq:dlq:{id}                   the dead-letter entry (when retrying one)
  KEYS[11] sq:inflight-users             hash job_id -> user (lets the reconciler free slots)
  KEYS[12] sq:active                     zset of running jobs (to place the new one)
  KEYS[13] sq:user:{user}:generations:{day}  the user's PixelLab jobs this UTC day (the
                                         day of ARGV[2]); expires ARGV[18] s after a charge

  ARGV[1]  job id
  ARGV[2]  now (ms)
  ARGV[3]  dedup window (ms); 0 = no dedup
  ARGV[4]  per-user cap; 0 = bypass (admin retry)
  ARGV[5]  global capacity
  ARGV[6]  arq job payload (JSON)
  ARGV[7]  arq job expiry (ms)
  ARGV[8]  job record fields, JSON object of strings
  ARGV[9]  first event data (JSON view; its position and wait are filled in here)
  ARGV[10] events stream max length
  ARGV[11] pub/sub channel for events
  ARGV[12] user
  ARGV[13] "1" when this requeues a dead-lettered job
  ARGV[14] worker slots, ARGV[15] median run time (s): inputs of the estimated wait
  ARGV[16] how long the user's job index is kept after its last write (s)
  ARGV[17] daily generations allowed; 0 = no quota (off, or an admin's DLQ retry: not
           charged to the user)
  ARGV[18] how long the day's counter is kept after its last charge (s)
  ARGV[19] pub/sub channel that wakes idle workers (sq:wake)

  Returns {code, job_id, inflight_count[, position, estimated_wait_s]}
     1  admitted, with the new job's place
     2  deduplicated: job_id is the existing job
    -1  queue full
    -2  user limit
    -4  dead-letter entry not found
    -5  daily quota used up
  A charged job's record gets ``charged = "1"``: finishJob refunds the charge of a job
  cancelled before its call (the counter key is named by the record's created_at, ARGV[2]).
]]
--@include place

local job_id, now = ARGV[1], tonumber(ARGV[2])
local window, per_user, capacity = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- Decoded before the first write: Redis does not undo a script's writes when a later line
-- raises, so anything that can fail on bad input must fail while nothing is written yet.
local fields = cjson.decode(ARGV[8])

if ARGV[13] == "1" and redis.call("EXISTS", KEYS[10]) == 0 then
  return {-4, job_id, 0}
end

if window > 0 then
  -- Only a job that is still going or succeeded is worth handing back: a cancelled or failed
  -- one would never give this request its sprite.
  local existing = redis.call("GET", KEYS[1])
  local status = existing and redis.call("HGET", "sq:job:" .. existing, "status")
  if status == "queued" or status == "active" or status == "completed" then
    return {2, existing, redis.call("ZCARD", KEYS[2])}
  end
end

-- A spent quota is checked before the caps: it is the refusal that lasts longest, so its
-- Retry-After (the next UTC midnight) is the accurate one.
local quota = tonumber(ARGV[17])
if quota > 0 and tonumber(redis.call("GET", KEYS[13]) or "0") >= quota then
  return {-5, job_id, redis.call("ZCARD", KEYS[2])}
end

-- The user cap is checked first: a user at their cap is held back by it whatever the queue
-- does (a slot freed by someone else's job does not help them), while their own job ending
-- frees both caps at once, so "user_limit" and its Retry-After are the accurate answer.
local inflight = redis.call("ZCARD", KEYS[2])
if per_user > 0 and redis.call("ZCARD", KEYS[3]) >= per_user then
  return {-2, job_id, inflight}
end
if inflight >= capacity then
  return {-1, job_id, inflight}
end

redis.call("ZADD", KEYS[2], now, job_id)
redis.call("ZADD", KEYS[3], now, job_id)
redis.call("HSET", KEYS[11], job_id, ARGV[12])
if window > 0 then
  redis.call("SET", KEYS[1], job_id, "PX", window)
end
if quota > 0 then
  redis.call("INCR", KEYS[13])
  redis.call("EXPIRE", KEYS[13], ARGV[18])
  fields["charged"] = "1"
end

redis.call("PSETEX", KEYS[5], ARGV[7], ARGV[6])
redis.call("ZADD", KEYS[6], now, job_id)
-- Its place: running jobs stay in arq's queue and are its oldest entries, so the jobs
-- ahead of this one are its rank minus the running ones (announcePositions counts exactly).
local active = redis.call("ZCARD", KEYS[12])
local position = math.max(redis.call("ZRANK", KEYS[6], job_id) - active, 0) + 1
local eta = queue_place(position, active, tonumber(ARGV[14]), tonumber(ARGV[15]))
fields["position"] = tostring(position)
fields["estimated_wait_s"] = eta

redis.call("DEL", KEYS[4], KEYS[8])
-- One HSET for the whole record: a call per field costs Redis more than the rest of this
-- script together, on the path every submission takes.
local flat = {}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call("HSET", KEYS[4], unpack(flat))
redis.call("ZADD", KEYS[7], now, job_id)
redis.call("ZREMRANGEBYRANK", KEYS[7], 0, -101)
redis.call("EXPIRE", KEYS[7], ARGV[16])
if ARGV[13] == "1" then
  redis.call("ZREM", KEYS[9], job_id)
  redis.call("DEL", KEYS[10])
end

local data = with_place(ARGV[9], position, eta)
local stream_id = redis.call("XADD", KEYS[8], "MAXLEN", "~", ARGV[10], "*",
  "event", "progress", "data", data)
redis.call("PUBLISH", ARGV[11], job_id .. " " .. stream_id .. " progress " .. data)
redis.call("PUBLISH", ARGV[19], "")
return {1, job_id, inflight + 1, position, eta}
