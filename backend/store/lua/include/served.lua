--[[
  served.lua, included by the scripts that write a job answered from the cache at once (it
  never queued): ``resolveSubmit`` (a plain request's L1 hit, in the caller's round trip)
  and ``recordServed`` (every other hit: an L2 one, a request with input images, ...).

  write_served(job): the record (``job.fields``, decoded, ``rev`` bumped), its `completed`
  event and its place in the user's job index, each kept ``job.keep`` seconds, and the hit
  counted in ``sq:stats``. ``job``: record_key, events_key, index_key, stats_key, id,
  created_ms, fields, data (the event's JSON view), keep, maxlen.
]]
local function write_served(job)
  write_fields(job.record_key, job.fields)
  redis.call("EXPIRE", job.record_key, job.keep)
  redis.call("ZADD", job.index_key, job.created_ms, job.id)
  redis.call("ZREMRANGEBYRANK", job.index_key, 0, -101)
  redis.call("EXPIRE", job.index_key, job.keep)
  redis.call("XADD", job.events_key, "MAXLEN", "~", job.maxlen, "*", "event", "completed",
    "data", job.data)
  redis.call("EXPIRE", job.events_key, job.keep)
  redis.call("HINCRBY", job.stats_key, "cache_hits", 1)
end
