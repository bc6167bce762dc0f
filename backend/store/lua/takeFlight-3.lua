--[[
  takeFlight: a running attempt takes its cache key's single-flight lock and, holding it,
  moves to stage 10 (submitted to PixelLab) with its event, in one step. Fenced: an attempt
  that lost its fence takes nothing.

  KEYS[1] sq:flight:{cache_key}   the lock, value = the holder's token, PX = a lease
  KEYS[2] sq:job:{id}             the job record
  KEYS[3] sq:events:{id}          the job's event stream

  ARGV[1] the attempt's token      ARGV[2] lease (ms)
  ARGV[3] guard ("fence:<token>", see include/guard.lua)
  ARGV[4] fields to set, JSON object of strings
  ARGV[5] event data (JSON view)   ARGV[6] events stream max length
  ARGV[7] pub/sub channel          ARGV[8] job id

  Returns the new rev when the lock is taken (and the stage written), 0 when another
  attempt holds it (nothing written: wait for it), -1 when fenced out (abandon the job).
]]
--@include guard
--@include record

local fields = cjson.decode(ARGV[4])
if redis.call("HGET", KEYS[2], "status") ~= "active" or not guard_holds(KEYS[2], ARGV[3]) then
  return -1
end
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return 0
end
local rev = write_fields(KEYS[2], fields)
emit(KEYS[3], ARGV[6], ARGV[7], ARGV[8], "progress", ARGV[5])
return rev
