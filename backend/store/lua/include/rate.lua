--[[
  rate.lua, included by the scripts that count a submission against the per-user submit
  rate (SPRITEQ_LIMITS__SUBMITS_PER_MINUTE).

  count_submit(key, limit, window_ms): a fixed window that opens at the user's first
  submission; the counter at ``key`` lives one window, then the next submission opens a
  new one. A refusal writes nothing: the counter is only read, so a client looping on a
  refused request cannot grow Redis by a byte (the point of the limit, on a noeviction
  Redis). Returns 1, count (admitted: this one included) or 0, retry_ms (refused: the
  window closes in retry_ms).
]]
local function count_submit(key, limit, window)
  local count = tonumber(redis.call("GET", key) or "0")
  if count >= limit then
    local ttl = redis.call("PTTL", key)
    if ttl < 0 then
      ttl = window
    end
    return 0, ttl
  end
  count = redis.call("INCR", key)
  -- NX: only the submission that opened the window sets its end (and a counter left
  -- without an expiry by anything gets one).
  redis.call("PEXPIRE", key, window, "NX")
  return 1, count
end
