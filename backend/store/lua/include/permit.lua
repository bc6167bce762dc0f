--[[
  permit.lua, included by the scripts that take one of the deployment's PixelLab call
  permits for an attempt (acquirePermit, startAttempt). Permits are leases (members of a
  zset scored by expiry), renewed with the attempt's lease, so a dead worker cannot leak
  one. Their number is SPRITEQ_PIXELLAB__MAX_CONCURRENCY, lowered while PixelLab throttles
  (``limit`` in sq:upstream, see releasePermit).

  take_permit(permits, upstream, claim, token, now, lease, max): returns code, held:
    1 granted; 0 every permit held; -1 the upstream is paused. When none is given, arq's
    claim on the job (``claim``, its in-progress key: "1" until an attempt starts) is
    dropped, so the job stays at its place in the queue for the next worker that finds a
    permit free, instead of being locked for a lease.
]]
local function take_permit(permits, upstream, claim, token, now, lease, max)
  redis.call("ZREMRANGEBYSCORE", permits, "-inf", now)
  local held = redis.call("ZCARD", permits)
  local function refuse(code)
    if redis.call("GET", claim) == "1" then
      redis.call("DEL", claim)
    end
    return code, held
  end
  if redis.call("HGET", upstream, "state") == "paused" then
    return refuse(-1)
  end
  local limit = math.floor(tonumber(redis.call("HGET", upstream, "limit") or max))
  limit = math.max(1, math.min(limit, max))
  if held >= limit and not redis.call("ZSCORE", permits, token) then
    return refuse(0)
  end
  redis.call("ZADD", permits, now + lease, token)
  return 1, held + 1
end
