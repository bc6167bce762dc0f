--[[
  claimJob: a worker claims a job that arq's poll found due, and reads what its run needs,
  in one step. The same checks as arq's own claim (a WATCH on the in-progress key, EXISTS,
  ZSCORE, then a MULTI with PSETEX: four round trips per job), made atomic by running here,
  and the first step of arq's ``run_job`` (read the payload, count the try, clear an abort
  request: one more round trip) done with them (``SpriteWorker.run_job``).

  KEYS[1] arq:in-progress:{id}   arq's lock on the job
  KEYS[2] <queue name>           arq's queue zset
  KEYS[3] arq:job:{id}           arq's payload of the job
  KEYS[4] arq:retry:{id}         arq's count of its runs of the job
  KEYS[5] arq:abort              arq's abort requests

  ARGV[1] job id   ARGV[2] now (ms)   ARGV[3] how long the lock is held (ms)
  ARGV[4] how long arq keeps its count of runs (s; arq's own 88,400)

  Returns {score, payload (nil when expired), this run's try number, 1 when an abort was
  asked for before the start} when claimed; false when it runs elsewhere, has left the
  queue, or is not due yet (deferred, perhaps by another worker since the poll).
]]
if redis.call("EXISTS", KEYS[1]) == 1 then
  return false
end
local score = redis.call("ZSCORE", KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return false
end
redis.call("SET", KEYS[1], "1", "PX", ARGV[3])
local payload = redis.call("GET", KEYS[3])
local try = redis.call("INCR", KEYS[4])
redis.call("EXPIRE", KEYS[4], ARGV[4])
local aborted = redis.call("ZREM", KEYS[5], ARGV[1])
return {score, payload, try, aborted}
