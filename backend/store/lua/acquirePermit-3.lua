--[[
  acquirePermit: take one of the deployment's PixelLab call permits for an attempt, unless
  the upstream is paused or every permit is held. Permits are leases (members of a zset
  scored by expiry), renewed with the attempt's lease, so a dead worker cannot leak one.

  The number of permits is SPRITEQ_PIXELLAB__MAX_CONCURRENCY, lowered while PixelLab
  throttles (``limit`` in sq:upstream, see releasePermit).

  When no permit is given, arq's claim on the job (its in-progress key, "1" until an
  attempt starts) is dropped, so the job stays at its place in the queue for the next
  worker that finds a permit free, instead of being locked for a lease.

  KEYS[1] sq:permits              zset attempt token -> lease expiry (ms)
  KEYS[2] sq:upstream             hash: state, reason, since, limit
  KEYS[3] arq:in-progress:{id}    arq's claim on the job

  ARGV[1] the attempt's token     ARGV[2] now (ms)
  ARGV[3] lease (ms)              ARGV[4] max concurrency (the setting)

  Returns {1, held} granted; {0, held} every permit held; {-1, held} upstream paused.
]]
local now = tonumber(ARGV[2])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
local held = redis.call("ZCARD", KEYS[1])
local function refuse(code)
  if redis.call("GET", KEYS[3]) == "1" then
    redis.call("DEL", KEYS[3])
  end
  return {code, held}
end
if redis.call("HGET", KEYS[2], "state") == "paused" then
  return refuse(-1)
end
local limit = math.floor(tonumber(redis.call("HGET", KEYS[2], "limit") or ARGV[4]))
limit = math.max(1, math.min(limit, tonumber(ARGV[4])))
if held >= limit and not redis.call("ZSCORE", KEYS[1], ARGV[1]) then
  return refuse(0)
end
redis.call("ZADD", KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return {1, held + 1}
