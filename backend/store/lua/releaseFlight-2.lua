--[[
  releaseFlight: the attempt that holds a cache key's single-flight lock lets it go, and
  leaves word of how its call ended for the jobs waiting on it. Compare-and-delete on the
  attempt's token, so a stale attempt (fenced out, its lock already lapsed and taken by
  another) never frees someone else's lock.

  KEYS[1] sq:flight:{cache_key}          the lock: the holder attempt's token, PX = lease
  KEYS[2] sq:flight-outcome:{cache_key}  how the last call ended, for the waiters

  ARGV[1] the attempt's token
  ARGV[2] outcome (JSON {type, message}) to leave for the waiters, or "" for none
  ARGV[3] how long the outcome is kept (ms)

  Returns 1 when released, 0 when held by another attempt or already gone.
]]
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call("DEL", KEYS[1])
if ARGV[2] ~= "" then
  redis.call("SET", KEYS[2], ARGV[2], "PX", ARGV[3])
end
return 1
