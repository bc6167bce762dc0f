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
  ARGV[19] pub/sub channel that wakes idle workers (sq:wake): "job <id>", claimed at once
  ARGV[20] priority aging (ms): the record's ``priority`` is an offset on the job's score in
           arq's queue (include/priority.lua)
  ARGV[21] the stats hash (sq:stats) whose ``cache_misses`` this submission counts (it
           missed the cache), or "" to count nothing (a DLQ retry, inputs resolved apart)

  Returns {code, job_id, inflight_count[, position, estimated_wait_s]}
     1  admitted, with the new job's place
     2  deduplicated: job_id is the existing job
    -1  queue full
    -2  user limit
    -4  dead-letter entry not found
    -5  daily quota used up
  The caps and the writes are shared with admitGroup (include/admit.lua).
  A charged job's record gets ``charged = "1"``: finishJob refunds the charge of a job
  cancelled before its call (the counter key is named by the record's created_at, ARGV[2]).
]]
--@include place
--@include priority
--@include admit

local job_id, now = ARGV[1], tonumber(ARGV[2])
local window = tonumber(ARGV[3])
-- Decoded before the first write: Redis does not undo a script's writes when a later line
-- raises, so anything that can fail on bad input must fail while nothing is written yet.
local fields = cjson.decode(ARGV[8])

if ARGV[21] ~= "" then
  redis.call("HINCRBY", ARGV[21], "cache_misses", 1)
end
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

local s = {
  now = now, inflight = KEYS[2], user_inflight = KEYS[3], owners = KEYS[11], queue = KEYS[6],
  active = KEYS[12], user_jobs = KEYS[7], quota_key = KEYS[13], user = ARGV[12],
  per_user = tonumber(ARGV[4]), capacity = tonumber(ARGV[5]), quota = tonumber(ARGV[17]),
  quota_keep = ARGV[18], arq_expiry = ARGV[7], slots = tonumber(ARGV[14]),
  median = tonumber(ARGV[15]), keep = ARGV[16], maxlen = ARGV[10], channel = ARGV[11],
}
local refused = admit_refusal(s, 1)
if refused then
  return {refused, job_id, redis.call("ZCARD", KEYS[2])}
end

if window > 0 then
  redis.call("SET", KEYS[1], job_id, "PX", window)
end
local position, eta = admit_one(s, {
  id = job_id, record_key = KEYS[4], arq_key = KEYS[5], events_key = KEYS[8],
  payload = ARGV[6], fields = fields, view = ARGV[9],
  score = queue_score(now, fields["priority"], tonumber(ARGV[20])),
})
if ARGV[13] == "1" then
  redis.call("ZREM", KEYS[9], job_id)
  redis.call("DEL", KEYS[10])
end
redis.call("PUBLISH", ARGV[19], "job " .. job_id)
return {1, job_id, redis.call("ZCARD", KEYS[2]), position, eta}
