--[[
  admit.lua, included by the scripts that admit new jobs (admitJob, admitGroup). Needs the
  place and priority includes before it.

  admit_refusal(s, count): the refusal code for admitting ``count`` more jobs, or nil.
  The daily quota first (the refusal that lasts longest, so its Retry-After is the accurate
  one), then the user cap (a user at their cap is held back by it whatever the queue does,
  and their own job ending frees both caps), then the global cap. All ``count`` jobs or
  none: a group that does not fit whole is refused whole.
    -5 daily quota used up   -2 user limit   -1 queue full

  admit_one(s, job): take one slot, charge the quota, write arq's job and queue entry, the
  record with the job's place, the user's index and the first event. ``job`` holds id,
  record_key, arq_key, events_key, payload, fields (decoded record), view (JSON) and score.
  Returns position, estimated wait.

  ``s`` holds what every job of one admission shares: now, inflight, user_inflight, owners,
  queue, active, user_jobs, quota_key (keys); user, per_user, capacity, quota, quota_keep,
  arq_expiry, slots, median, keep, maxlen, channel.
]]
local function admit_refusal(s, count)
  if s.quota > 0 and tonumber(redis.call("GET", s.quota_key) or "0") + count > s.quota then
    return -5
  end
  if s.per_user > 0 and redis.call("ZCARD", s.user_inflight) + count > s.per_user then
    return -2
  end
  if redis.call("ZCARD", s.inflight) + count > s.capacity then
    return -1
  end
  return nil
end

local function admit_one(s, job)
  redis.call("ZADD", s.inflight, s.now, job.id)
  redis.call("ZADD", s.user_inflight, s.now, job.id)
  redis.call("HSET", s.owners, job.id, s.user)
  if s.quota > 0 then
    redis.call("INCR", s.quota_key)
    redis.call("EXPIRE", s.quota_key, s.quota_keep)
    job.fields["charged"] = "1"
  end
  redis.call("PSETEX", job.arq_key, s.arq_expiry, job.payload)
  redis.call("ZADD", s.queue, job.score, job.id)
  local active = redis.call("ZCARD", s.active)
  local position = queued_ahead(s.queue, s.active, job.id) + 1
  local eta = queue_place(position, active, s.slots, s.median)
  job.fields["position"] = tostring(position)
  job.fields["estimated_wait_s"] = eta

  redis.call("DEL", job.record_key, job.events_key)
  -- One HSET for the whole record: a call per field costs Redis more than the rest of the
  -- admission, on the path every submission takes.
  local flat = {}
  for name, value in pairs(job.fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  redis.call("HSET", job.record_key, unpack(flat))
  redis.call("ZADD", s.user_jobs, s.now, job.id)
  redis.call("ZREMRANGEBYRANK", s.user_jobs, 0, -101)
  redis.call("EXPIRE", s.user_jobs, s.keep)

  local data = with_place(job.view, position, eta)
  local stream_id = redis.call("XADD", job.events_key, "MAXLEN", "~", s.maxlen, "*",
    "event", "progress", "data", data)
  redis.call("PUBLISH", s.channel, job.id .. " " .. stream_id .. " progress " .. data)
  return position, eta
end
