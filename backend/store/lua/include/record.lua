--[[
  record.lua, included by the scripts that write a job record and its events.

  write_fields(job_key, fields): HSET a decoded JSON object of strings in one call (a call
  per field costs more than the rest of a script) and bump ``rev``; returns the new rev.
  Decode the JSON before the first write of a script: Redis does not undo a script's
  earlier writes when a later line raises.

  emit(events_key, maxlen, channel, job_id, event, data): append the event to the job's
  bounded stream and publish it for the SSE fan-out; returns the stream id.
]]
local function write_fields(job_key, fields)
  local flat = {}
  for name, value in pairs(fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  if #flat > 0 then
    redis.call("HSET", job_key, unpack(flat))
  end
  return redis.call("HINCRBY", job_key, "rev", 1)
end

local function emit(events_key, maxlen, channel, job_id, event, data)
  local stream_id = redis.call("XADD", events_key, "MAXLEN", "~", maxlen, "*",
    "event", event, "data", data)
  redis.call("PUBLISH", channel, job_id .. " " .. stream_id .. " " .. event .. " " .. data)
  return stream_id
end
