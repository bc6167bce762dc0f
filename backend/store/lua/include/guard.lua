--[[
  guard.lua, included by every script that changes a job on someone's behalf.

  guard_holds(job_key, guard): whether that writer may still write the job.
    "fence:<token>"  a runner: the token of the attempt it runs. Every other writer (a
                     cancel, a takeover after a lost lease, a requeue, a final state, an
                     admin's DLQ retry) changes or clears the fence, so a stale runner's
                     write does nothing, however late it arrives.
    "rev:<n>"        a writer that built its change from a read of revision n: a
                     compare-and-set, since every write bumps ``rev`` (write_fields).
]]
local function guard_holds(job_key, guard)
  local sep = string.find(guard, ":", 1, true)
  if not sep then
    return false
  end
  local kind, value = string.sub(guard, 1, sep - 1), string.sub(guard, sep + 1)
  if kind == "fence" then
    return value ~= "" and redis.call("HGET", job_key, "fence") == value
  end
  if kind == "rev" then
    return (redis.call("HGET", job_key, "rev") or "0") == value
  end
  return false
end
