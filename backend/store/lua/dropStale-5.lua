--[[
  dropStale: take arq's entries for a job out of arq's hands when no attempt can run it:
  its record is final or gone, or arq's own job payload is missing. Used where arq would
  otherwise clean up by itself, unguarded (a job it finds expired or aborted before start,
  a job our runner skips because it is already final): a blind clean-up there could undo
  an admin's DLQ retry that re-created the job under the same id, since that retry writes
  the record and arq's entries together and this script sees the record queued again.

  KEYS[1] sq:job:{id}    KEYS[2] arq:job:{id}    KEYS[3] arq:in-progress:{id}
  KEYS[4] arq:retry:{id} KEYS[5] <queue name>

  ARGV[1] job id

  Returns 1 when dropped, 0 when the job is runnable (left alone).
]]
local status = redis.call("HGET", KEYS[1], "status")
local runnable = (status == "queued" or status == "active")
if runnable and redis.call("EXISTS", KEYS[2]) == 1 then
  return 0
end
redis.call("DEL", KEYS[2], KEYS[3], KEYS[4])
redis.call("ZREM", KEYS[5], ARGV[1])
return 1
