--[[
  releaseLock: delete a lock only if this owner still holds it (compare-and-delete).
  A WATCH/MULTI release would fail whenever the owner's own lease loop renewed the lock
  in between; one script cannot.

  KEYS[1] the lock key (sq:flight:{cache_key})
  ARGV[1] the owner (job id)

  Returns 1 when deleted, 0 when held by another owner or already gone.
]]
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
