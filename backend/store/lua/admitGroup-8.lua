--[[
  admitGroup: admit the variants of one submission (``variants`` > 1) all or nothing: the
  daily quota, the user cap and the global cap are checked for the whole group, then every
  job is admitted as admitJob admits one (include/admit.lua), and the group is recorded, in
  one atomic step. A group that does not fit whole creates no job. A group has no dedup
  window: each submission of variants is a new group.

  KEYS[1] sq:inflight               KEYS[2] sq:user:{user}:inflight
  KEYS[3] <queue name>              KEYS[4] sq:user:{user}:jobs
  KEYS[5] sq:inflight-users         KEYS[6] sq:active
  KEYS[7] sq:user:{user}:generations:{day}   KEYS[8] sq:group:{group id}

  ARGV[1]  now (ms)                 ARGV[2]  per-user cap
  ARGV[3]  global capacity          ARGV[4]  arq job expiry (ms)
  ARGV[5]  events stream max length ARGV[6]  pub/sub channel for events
  ARGV[7]  user                     ARGV[8]  worker slots, ARGV[9] median run time (s)
  ARGV[10] how long the user's job index is kept after its last write (s)
  ARGV[11] daily generations allowed (0: no quota)
  ARGV[12] how long the day's counter is kept after its last charge (s)
  ARGV[13] pub/sub channel that wakes idle workers (sq:wake)
  ARGV[14] priority aging (ms)      ARGV[15] the group (JSON), stored at KEYS[8]
  ARGV[16] how long the group is kept (s)
  ARGV[17] job record key prefix ("sq:job:"), ARGV[18] arq job key prefix ("arq:job:"),
  ARGV[19] event stream key prefix ("sq:events:")
  ARGV[20] number of jobs, then for each job four values: id, arq payload, record fields
           (JSON object of strings, with its ``priority``), first event data (JSON view)

  Returns {1, inflight, position, wait, position, wait, ...} (a place per job, in order), or
  {code, inflight} refused: -1 queue full, -2 user limit, -5 daily quota used up.
]]
--@include place
--@include priority
--@include admit

local now, count = tonumber(ARGV[1]), tonumber(ARGV[20])
-- Decoded before the first write (a raise later would leave half a group).
local jobs = {}
for i = 1, count do
  local at = 20 + (i - 1) * 4
  jobs[i] = {id = ARGV[at + 1], payload = ARGV[at + 2], fields = cjson.decode(ARGV[at + 3]),
             view = ARGV[at + 4]}
end

local s = {
  now = now, inflight = KEYS[1], user_inflight = KEYS[2], owners = KEYS[5], queue = KEYS[3],
  active = KEYS[6], user_jobs = KEYS[4], quota_key = KEYS[7], user = ARGV[7],
  per_user = tonumber(ARGV[2]), capacity = tonumber(ARGV[3]), quota = tonumber(ARGV[11]),
  quota_keep = ARGV[12], arq_expiry = ARGV[4], slots = tonumber(ARGV[8]),
  median = tonumber(ARGV[9]), keep = ARGV[10], maxlen = ARGV[5], channel = ARGV[6],
}
local refused = admit_refusal(s, count)
if refused then
  return {refused, redis.call("ZCARD", KEYS[1])}
end

local placed = {}
local aging = tonumber(ARGV[14])
for i, job in ipairs(jobs) do
  job.record_key = ARGV[17] .. job.id
  job.arq_key = ARGV[18] .. job.id
  job.events_key = ARGV[19] .. job.id
  -- A millisecond apart: the variants start in the order they were asked for.
  job.score = queue_score(now, job.fields["priority"], aging) + i - 1
  local position, eta = admit_one(s, job)
  placed[#placed + 1] = position
  placed[#placed + 1] = eta
end
redis.call("SET", KEYS[8], ARGV[15], "EX", ARGV[16])
redis.call("PUBLISH", ARGV[13], "job")
local reply = {1, redis.call("ZCARD", KEYS[1])}
for _, value in ipairs(placed) do
  reply[#reply + 1] = value
end
return reply
