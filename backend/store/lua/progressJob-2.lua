--[[
  progressJob: a running attempt's progress (stage and progress), with its event.
  Fenced: only the attempt that holds the job's fence may write, so a runner that lost its
  lease (another worker took the job over) or whose job was cancelled writes nothing.

  KEYS[1] sq:job:{id}      the job record
  KEYS[2] sq:events:{id}   the job's event stream

  ARGV[1] guard ("fence:<token>", see include/guard.lua)
  ARGV[2] fields to set, JSON object of strings
  ARGV[3] event data (JSON view)
  ARGV[4] events stream max length
  ARGV[5] pub/sub channel
  ARGV[6] job id

  Returns the new rev when applied, 0 when fenced out (the runner must abandon the job).
]]
--@include guard
--@include record

local fields = cjson.decode(ARGV[2])
if redis.call("HGET", KEYS[1], "status") ~= "active" or not guard_holds(KEYS[1], ARGV[1]) then
  return 0
end
local rev = write_fields(KEYS[1], fields)
emit(KEYS[2], ARGV[4], ARGV[5], ARGV[6], "progress", ARGV[3])
return rev
