--[[
  acquirePermit: take one of the deployment's PixelLab call permits for an attempt, unless
  the upstream is paused or every permit is held (include/permit.lua). Used by an attempt
  that gave its permit back while it waited on another job's call; an attempt's first
  permit is taken by startAttempt.

  KEYS[1] sq:permits              zset attempt token -> lease expiry (ms)
  KEYS[2] sq:upstream             hash: state, reason, since, limit
  KEYS[3] arq:in-progress:{id}    arq's claim on the job

  ARGV[1] the attempt's token     ARGV[2] now (ms)
  ARGV[3] lease (ms)              ARGV[4] max concurrency (the setting)

  Returns {1, held} granted; {0, held} every permit held; {-1, held} upstream paused.
]]
--@include permit
local code, held = take_permit(KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4]))
return {code, held}
