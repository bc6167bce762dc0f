--[[
  claimJob: a worker claims a job that arq's poll found due, in one step. The same checks
  as arq's own claim (a WATCH on the in-progress key, EXISTS, ZSCORE, then a MULTI with
  PSETEX: four round trips per job), made atomic by running here instead.

  KEYS[1] arq:in-progress:{id}   arq's lock on the job
  KEYS[2] <queue name>           arq's queue zset

  ARGV[1] job id   ARGV[2] now (ms)   ARGV[3] how long the lock is held (ms)

  Returns the job's queue score when claimed; false when it runs elsewhere, has left the
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
return score
