--[[
  announcePositions: give every waiting job its current place and estimated wait, and push
  the ones that changed into the job's event stream, atomically with the record.

  Walks a slice of arq's queue in order, counting the jobs still queued (running ones stay
  in the queue until they end), so each position is exact. The caller walks a long queue in
  slices, passing on the count, so no single call holds Redis for long.

  A job is announced (and its stored place updated, so polling and SSE always agree) when:
  - its position changed and it is within the first ARGV[12] places, or it moved by at
    least ARGV[13] x its announced position (deep in a long queue, every step of every job
    would be an event per waiting job per start);
  - or its wait moved by at least max(ARGV[6] s, ARGV[7] x the announced wait): a median
    that drifts by a few percent after every completion is not worth an event either.
  The event is the job's last one (always a queued view while it waits) with the place set.
  At most ARGV[14] jobs are announced per call: the walk stops there, so a fast drain of a
  long queue costs a bounded number of events per interval, spent from the head of the queue
  (jobs further back keep their last place, an overestimate, until the next walks reach them).

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
  ARGV[12] places within which every move is announced
  ARGV[13] smallest move worth an event beyond them, as a fraction of the announced place
  ARGV[14] most jobs to announce in this call
  ARGV[15] now (ms): a job whose score is later is deferred, and its wait includes the defer

  Returns {queued jobs up to the slice's end, jobs announced, queue entries walked}
]]
--@include place

local slots, median = tonumber(ARGV[1]), tonumber(ARGV[2])
local first, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local min_change_s, min_change_ratio = tonumber(ARGV[6]), tonumber(ARGV[7])
local every_move_up_to, min_move_ratio = tonumber(ARGV[12]), tonumber(ARGV[13])
local budget = tonumber(ARGV[14])
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
  if not old_position or not old_eta then
    return true
  end
  local moved = math.abs(position - old_position)
  if moved > 0 and (position <= every_move_up_to or moved >= min_move_ratio * old_position) then
    return true
  end
  return math.abs(eta - old_eta) >= math.max(min_change_s, min_change_ratio * old_eta)
end

local now = tonumber(ARGV[15])
local slice = redis.call("ZRANGE", KEYS[1], first, first + count - 1, "WITHSCORES")
local walked = #slice / 2
for i = 1, #slice, 2 do
  local job_id, ready_at = slice[i], tonumber(slice[i + 1])
  if announced >= budget then
    break
  end
  local job_key = ARGV[10] .. job_id
  local state = redis.call("HMGET", job_key, "status", "position", "estimated_wait_s")
  if state[1] == "queued" then
    waiting = waiting + 1
    local eta = queue_place(waiting, active, slots, median, (ready_at - now) / 1000)
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
return {waiting, announced, walked}
