--[[
  startAttempt: a worker that arq handed this job begins a new attempt. It takes the fence
  (a fresh token), so every write of an earlier attempt of this job is refused from now
  on, marks the job active, holds arq's in-progress key as its lease (value = the token)
  and appends the ``started`` event.

  The caller read the record (revision n) to build the attempt (its history, stalls), so
  this is a compare-and-set on ``rev``: if anything wrote the job since, nothing changes
  and the caller reads again.

  An attempt calls PixelLab only with one of the deployment's call permits, taken here in
  the same step (include/permit.lua) once the job is known to be runnable: without one,
  nothing else changes and the job keeps its place in the queue.

  Started, the attempt also takes its cache key's single-flight lock when it is free, and
  moves to stage 10 with its event (as takeFlight does): one round trip for both. Held by
  another attempt, the lock is left alone and this one waits for it (runner).

  KEYS[1] sq:job:{id}
  KEYS[2] sq:events:{id}
  KEYS[3] sq:active                zset job_id -> started at (ms)
  KEYS[4] arq:in-progress:{id}     arq's lock on the job, held as our lease
  KEYS[5] sq:permits               zset attempt token -> lease expiry (ms)
  KEYS[6] sq:upstream              hash: state, reason, since, limit
  KEYS[7] arq:retry:{id}           arq's count of its runs of the job
  KEYS[8] sq:flight:{cache_key}    the single-flight lock, value = the holder's token

  ARGV[1] guard ("rev:<n>")
  ARGV[2] the attempt's token       ARGV[3] worker id
  ARGV[4] now (ms)                  ARGV[5] lease (ms)
  ARGV[6] fields to set, JSON object of strings
  ARGV[7] event data (JSON view)    ARGV[8] events stream max length
  ARGV[9] pub/sub channel           ARGV[10] job id
  ARGV[11] max concurrency (SPRITEQ_PIXELLAB__MAX_CONCURRENCY); 0 = take no permit
  ARGV[12] "1": take the flight lock if it is free ("": leave it)
  ARGV[13] stage 10's fields, JSON object of strings   ARGV[14] stage 10's event data

  Returns {1, rev, 1 if the flight lock was taken else 0} started (holding a permit);
          {0, status} not runnable (finished or gone:
          skip it); {-1, status} the record changed since the read (read again);
          {-2, held} every permit is held; {-3, held} PixelLab calls are paused.

  A job refused for want of a permit keeps its place, and arq's run of it is not a try:
  arq counted it before our task ran, and a job at the head of a queue whose permits are
  all held is picked and refused several times a second, so arq would soon refuse it as
  past its tries and leave it in the queue forever.
]]
--@include guard
--@include record
--@include permit

local fields = cjson.decode(ARGV[6])
local submitted = ARGV[12] == "1" and cjson.decode(ARGV[13]) or nil
local status = redis.call("HGET", KEYS[1], "status")
if status ~= "queued" and status ~= "active" then
  return {0, status or ""}
end
if not guard_holds(KEYS[1], ARGV[1]) then
  return {-1, status}
end
local max = tonumber(ARGV[11])
if max > 0 then
  local code, held = take_permit(KEYS[5], KEYS[6], KEYS[4], ARGV[2], tonumber(ARGV[4]),
    tonumber(ARGV[5]), max)
  if code ~= 1 then
    if tonumber(redis.call("GET", KEYS[7]) or "0") > 0 then
      redis.call("DECR", KEYS[7])
    end
    return {code - 2, held}
  end
end
-- A place in the queue is only ever current: starting makes it meaningless.
redis.call("HDEL", KEYS[1], "position", "estimated_wait_s")
fields["fence"] = ARGV[2]
fields["worker"] = ARGV[3]
local rev = write_fields(KEYS[1], fields)
redis.call("ZADD", KEYS[3], ARGV[4], ARGV[10])
redis.call("SET", KEYS[4], ARGV[2], "PX", ARGV[5])
emit(KEYS[2], ARGV[8], ARGV[9], ARGV[10], "progress", ARGV[7])
if submitted and redis.call("SET", KEYS[8], ARGV[2], "NX", "PX", ARGV[5]) then
  rev = write_fields(KEYS[1], submitted)
  emit(KEYS[2], ARGV[8], ARGV[9], ARGV[10], "progress", ARGV[14])
  return {1, rev, 1}
end
return {1, rev, 0}
