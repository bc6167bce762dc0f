--[[
  renewLeases: a worker renews the leases of the attempts it runs (arq's in-progress key,
  and the single-flight lock where the attempt holds one), and learns which of them it has
  lost: an attempt whose job no longer carries its fence was cancelled, finished by
  someone else, or taken over after its lease lapsed. The worker abandons those at once.

  Keys are built from the prefixes below (this Redis is one node or a Sentinel group,
  never a cluster), since a worker renews any number of attempts in one call.

  ARGV[1] lease (ms)
  ARGV[2] job record key prefix ("sq:job:")
  ARGV[3] arq's in-progress key prefix ("arq:in-progress:")
  ARGV[4] the PixelLab call permits' key ("sq:permits"), ARGV[5] now (ms)
  ARGV[6 ...] quadruples: job id, the attempt's token, its flight lock key or "", "1" if it
              holds a call permit (renewed too) else ""

  Returns the job ids whose attempt has lost its fence.
]]
local lease = ARGV[1]
local until_ms = tonumber(ARGV[5]) + tonumber(lease)
local lost = {}
for i = 6, #ARGV, 4 do
  local job_id, token, flight, permit = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call("HGET", ARGV[2] .. job_id, "fence") == token then
    if permit == "1" then
      redis.call("ZADD", ARGV[4], "XX", until_ms, token)
    end
    -- SET, not PEXPIRE: a lease that lapsed but was not taken over is still ours.
    redis.call("SET", ARGV[3] .. job_id, token, "PX", lease)
    if flight ~= "" then
      local holder = redis.call("GET", flight)
      if holder == token then
        redis.call("PEXPIRE", flight, lease)
      elseif not holder then
        redis.call("SET", flight, token, "PX", lease)
      end
    end
  else
    lost[#lost + 1] = job_id
  end
end
return lost
