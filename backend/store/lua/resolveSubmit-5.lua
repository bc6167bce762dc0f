--[[
  resolveSubmit: the round trip of a plain submission (one job, no input images) that
  learns who the caller is, counts their submit rate and reads the dedup window, together.
  When the API found the sprite in L1 before this call, the same step also writes the
  answered job (a cache hit: two round trips in all, one to L1 and this one).
  The caller is read from Redis on every request, so a revoked token is refused at once.

  KEYS[1]  sq:token:{sha256}       the token's record (tokens.py)
  KEYS[2]  sq:tokens:last-used     token hash -> last use (epoch s)
  KEYS[3]  sq:job:{id}             the new job's record   } written only for a cache hit
  KEYS[4]  sq:events:{id}          its event stream        } that is served (ARGV[8] set)
  KEYS[5]  sq:stats                its cache_hits counter  }

  ARGV[1]  the token's SHA-256
  ARGV[2]  now (epoch s)
  ARGV[3]  how stale `last used` may get before it is written again (s)
  ARGV[4]  submissions allowed per minute (0: no limit)
  ARGV[5]  rate window (ms)
  ARGV[6]  the rate counter's key, with "{user}" for the user
  ARGV[7]  the dedup key, with "{user}" for the user
  ARGV[8]  a cache hit's finished job record, JSON object of strings without its ``user``
           (filled in here), or "" when L1 did not have the sprite
  ARGV[9]  its `completed` event data (the JSON view)
  ARGV[10] how long the record, its events and the user's job index are kept (s)
  ARGV[11] events stream max length
  ARGV[12] the user's job index key, with "{user}" for the user
  ARGV[13] the job id; ARGV[14] its created_at (ms)

  Returns false                                unknown, revoked or expired token
          {user, admin, priority, admitted, value, duplicate or false, served, record}
            admitted 1 / value = the count in this window (0 when there is no limit)
            admitted 0 / value = ms until the window closes: refused, nothing written
            served 1: the cache hit's job was written (no live duplicate stood in its way)
            record: the duplicate's job record (HGETALL), so its answer needs no read of its
            own; empty without a duplicate
]]
--@include rate
--@include record
--@include served
-- Decoded before the first write: Redis does not undo a script's writes when a later line
-- raises, so anything that can fail on bad input must fail while nothing is written yet.
local hit = ARGV[8] ~= "" and cjson.decode(ARGV[8])
local id, user, admin, expires_at, priority =
  unpack(redis.call("HMGET", KEYS[1], "id", "user", "admin", "expires_at", "priority"))
local now = tonumber(ARGV[2])
if not user or (expires_at and tonumber(expires_at) <= now) then
  return false
end
if id then
  -- At most one write per token per interval, kept out of the record: a write racing a
  -- revoke must not bring a deleted record back (the revoke drops this entry too).
  local last = redis.call("HGET", KEYS[2], ARGV[1])
  if not last or now - tonumber(last) >= tonumber(ARGV[3]) then
    redis.call("HSET", KEYS[2], ARGV[1], ARGV[2])
  end
end
local function for_user(template)
  return (string.gsub(template, "{user}", (string.gsub(user, "%%", "%%%%"))))
end
local admitted, value = 1, 0
local limit = tonumber(ARGV[4])
if limit > 0 then
  admitted, value = count_submit(for_user(ARGV[6]), limit, tonumber(ARGV[5]))
end
local duplicate = redis.call("GET", for_user(ARGV[7]))
local served = 0
if hit and admitted == 1 then
  -- The dedup window comes first: a job still going or done answers this request. A
  -- cancelled or failed one would never give it its sprite, so the hit is served instead.
  local status = duplicate and redis.call("HGET", "sq:job:" .. duplicate, "status")
  if status ~= "queued" and status ~= "active" and status ~= "completed" then
    hit["user"] = user
    write_served({
      record_key = KEYS[3], events_key = KEYS[4], index_key = for_user(ARGV[12]),
      stats_key = KEYS[5], id = ARGV[13], created_ms = ARGV[14], fields = hit,
      data = ARGV[9], keep = ARGV[10], maxlen = ARGV[11],
    })
    served, duplicate = 1, false
  end
end
local record = duplicate and redis.call("HGETALL", "sq:job:" .. duplicate) or {}
return {user, admin or "0", priority or "normal", admitted, value, duplicate, served, record}
