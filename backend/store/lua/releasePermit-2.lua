--[[
  releasePermit: give an attempt's call permit back, with what the call taught us about
  PixelLab's capacity (AIMD, as TCP does with its window):

  - "throttled" (a 429): the number of permits is halved, at most once a second (a burst
    of 429s from calls already in flight is one signal), never below 1; the upstream
    becomes "throttled";
  - "ok": while throttled, it grows by 1/limit (about one more permit per round of calls)
    back to the setting, where the upstream is "ok" again;
  - "none": the permit was not used for a call (a cache hit, a job waiting on another's).

  A permit freed while every permit was held may be what a queued job waits for: idle
  workers are woken (ARGV[5], sq:wake).

  KEYS[1] sq:permits    KEYS[2] sq:upstream
  ARGV[1] the attempt's token    ARGV[2] outcome    ARGV[3] now (ms)    ARGV[4] max concurrency
  ARGV[5] pub/sub channel that wakes idle workers

  Returns {state before, state after}: "ok", "throttled" or "paused" (a pause is never
  lifted here), so the caller sees a change without reading the state again.
]]
local now, max = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call("HGET", KEYS[2], "state") or "ok"
local before = state
local limit = tonumber(redis.call("HGET", KEYS[2], "limit") or max)
if redis.call("ZREM", KEYS[1], ARGV[1]) == 1
    and redis.call("ZCOUNT", KEYS[1], now, "+inf") + 1 >= math.floor(limit) then
  redis.call("PUBLISH", ARGV[5], "permit")
end
if ARGV[2] == "throttled" then
  local last = tonumber(redis.call("HGET", KEYS[2], "decreased_at") or "0")
  if now - last >= 1000 then
    limit = math.max(1, math.floor(limit / 2))
    redis.call("HSET", KEYS[2], "limit", limit, "decreased_at", now)
  end
  if state == "ok" then
    state = "throttled"
    redis.call("HSET", KEYS[2], "state", state, "reason", "rate_limited", "since", now / 1000)
  end
elseif ARGV[2] == "ok" and state == "throttled" then
  limit = math.min(max, limit + 1 / math.max(limit, 1))
  if limit >= max then
    state = "ok"
    redis.call("HSET", KEYS[2], "state", state, "since", now / 1000)
    redis.call("HDEL", KEYS[2], "reason", "limit", "decreased_at")
  else
    redis.call("HSET", KEYS[2], "limit", limit)
  end
end
return {before, state}
