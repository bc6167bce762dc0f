--[[
  recordServed: a job answered from the cache at once, outside a plain request's caller
  round trip (an L2 hit, a request with input images or options, the bootstrap admin's);
  with a callback_url, its webhook delivery is due in the same step.

  KEYS[1]  sq:job:{id}            the record
  KEYS[2]  sq:events:{id}         its event stream
  KEYS[3]  sq:user:{user}:jobs    the user's job index
  KEYS[4]  sq:stats               cache_hits
  KEYS[5]  sq:webhooks            deliveries due (written only with ARGV[7] = "1")

  ARGV[1]  the record's fields, JSON object of strings
  ARGV[2]  its `completed` event data (the JSON view)
  ARGV[3]  job id; ARGV[4] created_at (ms)
  ARGV[5]  how long the record, its events and the index are kept (s)
  ARGV[6]  events stream max length
  ARGV[7]  "1" when a webhook is due; ARGV[8] the channel that wakes its deliverer
]]
--@include record
--@include served
local fields = cjson.decode(ARGV[1])
write_served({
  record_key = KEYS[1], events_key = KEYS[2], index_key = KEYS[3], stats_key = KEYS[4],
  id = ARGV[3], created_ms = ARGV[4], fields = fields, data = ARGV[2], keep = ARGV[5],
  maxlen = ARGV[6],
})
if ARGV[7] == "1" then
  redis.call("ZADD", KEYS[5], ARGV[4], ARGV[3])
  redis.call("PUBLISH", ARGV[8], "webhook")
end
return 1
