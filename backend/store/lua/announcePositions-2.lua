--[[
  announcePositions: give every waiting job its current place and estimated wait, and push
  the ones that changed into the job's event stream, atomically with the record.

  Walks a slice of arq's queue in order, counting the jobs still queued (running ones stay
  in the queue until they end), so each position is exact. The caller walks a long queue in
  slices, passing on the count, so no single call holds Redis for long. A job is announced when its position changed,
  or when its wait moved by at least max(ARGV[4] s, ARGV[5] x the announced wait): a median
  that drifts by a few percent after every completion is not worth an event per waiting job.
  The event is the job's last one (always a queued view while it waits) with the place set.

  KEYS[1] <queue name>   arq's queue zset
  KEYS[2] sq:active      zset of running jobs

  ARGV[1] worker slots          ARGV[2] median run time (s)
  ARGV[3] first queue index of the slice, ARGV[4] its length
  ARGV[5] queued jobs ahead of the slice (counted by the previous slices)
  ARGV[6] smallest wait change worth an event (s)
  ARGV[7] smallest wait change worth an event, as a fraction of the announced wait
  ARGV[8] events stream max length
  ARGV[9] pub/sub channel
  ARGV[10] job record key prefix ("sq:job:"), ARGV[11] event stream key prefix ("sq:events:")

  Returns {queued jobs up to the slice's end, jobs announced, queue entries walked}
]]
--@include place

local slots, median = tonumber(ARGV[1]), tonumber(ARGV[2])
local first, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local min_change_s, min_change_ratio = tonumber(ARGV[6]), tonumber(ARGV[7])
local active = redis.call("ZCARD", KEYS[2])
local waiting, announced = tonumber(ARGV[5]), 0

local function last_data(events_key)
  local last = redis.call("XREVRANGE", events_key, "+", "-", "COUNT", 1)[1]
  if not last then
    return nil
  end
  local fields = last[2]
  for i = 1, #fields, 2 do
    if fields[i] == "data" then
      return fields[i + 1]
    end
  end
  return nil
end

local function changed(position, eta, old_position, old_eta)
  if position ~= old_position or not old_eta then
    return true
  end
  return math.abs(eta - old_eta) >= math.max(min_change_s, min_change_ratio * old_eta)
end

local slice = redis.call("ZRANGE", KEYS[1], first, first + count - 1)
for _, job_id in ipairs(slice) do
  local job_key = ARGV[10] .. job_id
  local state = redis.call("HMGET", job_key, "status", "position", "estimated_wait_s")
  if state[1] == "queued" then
    waiting = waiting + 1
    local eta = queue_place(waiting, active, slots, median)
    local events_key = ARGV[11] .. job_id
    if changed(waiting, tonumber(eta), tonumber(state[2]), tonumber(state[3])) then
      local data = last_data(events_key)
      if data then
        data = with_place(data, waiting, eta)
        redis.call("HSET", job_key, "position", waiting, "estimated_wait_s", eta)
        local stream_id = redis.call("XADD", events_key, "MAXLEN", "~", ARGV[8], "*",
          "event", "progress", "data", data)
        redis.call("PUBLISH", ARGV[9], job_id .. " " .. stream_id .. " progress " .. data)
        announced = announced + 1
      end
    end
  end
end
return {waiting, announced, #slice}
