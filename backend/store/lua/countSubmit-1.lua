--[[
  countSubmit: the per-user submit rate (SPRITEQ_LIMITS__SUBMITS_PER_MINUTE), checked and
  counted in one step. A fixed window that opens at the user's first submission: the
  counter lives one window, then the next submission opens a new one.

  A refusal writes nothing: the counter is only read, so a client looping on a refused
  request cannot grow Redis by a byte (the point of the limit, on a noeviction Redis).

  KEYS[1]  sq:user:{user}:submits   string, submissions in the current window, PX = window

  ARGV[1]  submissions allowed per window
  ARGV[2]  window (ms)

  Returns {1, count}       admitted: the count in this window, this one included
          {0, retry_ms}    refused: the window closes in retry_ms
]]
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local count = tonumber(redis.call("GET", KEYS[1]) or "0")
if count >= limit then
  local ttl = redis.call("PTTL", KEYS[1])
  if ttl < 0 then
    ttl = window
  end
  return {0, ttl}
end
count = redis.call("INCR", KEYS[1])
-- NX: only the submission that opened the window sets its end (and a counter left without
-- an expiry by anything gets one).
redis.call("PEXPIRE", KEYS[1], window, "NX")
return {1, count}
