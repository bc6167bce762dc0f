--[[
  resolveSubmit: the first round trip of a plain submission (one job, no input images):
  who the caller is, their submit rate counted, and the dedup window read, together.
  The caller is read from Redis on every request, so a revoked token is refused at once.

  KEYS[1]  sq:token:{sha256}       the token's record (tokens.py)
  KEYS[2]  sq:tokens:last-used     token hash -> last use (epoch s)

  ARGV[1]  the token's SHA-256
  ARGV[2]  now (epoch s)
  ARGV[3]  how stale `last used` may get before it is written again (s)
  ARGV[4]  submissions allowed per minute (0: no limit)
  ARGV[5]  rate window (ms)
  ARGV[6]  the rate counter's key, with "{user}" for the user
  ARGV[7]  the dedup key, with "{user}" for the user

  Returns false                                unknown, revoked or expired token
          {user, admin, priority, admitted, value, duplicate or false}
            admitted 1 / value = the count in this window (0 when there is no limit)
            admitted 0 / value = ms until the window closes: refused, nothing written
]]
--@include rate
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
return {user, admin or "0", priority or "normal", admitted, value, duplicate}
