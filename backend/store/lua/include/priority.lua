--[[
  priority.lua, included by the scripts that put a job in arq's queue (admitJob, admitGroup,
  requeueJob) and place it.

  arq's queue is a sorted set scored by when a job may start (ms); a worker takes the due
  entries (score <= now) lowest first. A priority is an offset on that score:
    score = base_ms - level * aging_ms,   level: low 0, normal 1, high 2
  with aging_ms = SPRITEQ_JOBS__PRIORITY_AGING_S. Every offset is <= 0, so a new job of any
  priority is due at once; a job one level up sorts ahead of every job up to aging_ms
  younger; and a job that has waited aging_ms scores as a new job one level up would. So
  aging (nothing starves) is the arithmetic itself, with no timer rewriting scores. Within
  a priority the order is the base time: first in, first out.

  queue_score(base_ms, priority, aging_ms): the score above (an unknown priority: normal).

  queued_ahead(queue_key, active_key, job_id): how many jobs still waiting sort ahead of
  ``job_id`` in arq's queue. Running jobs keep their queue entries until they end and, with
  priorities, need not be the oldest ones, so those ahead of the job are counted one by one
  (they are at most the worker slots).
]]
local PRIORITY_LEVEL = {low = 0, normal = 1, high = 2}

local function queue_score(base_ms, priority, aging_ms)
  return base_ms - (PRIORITY_LEVEL[priority] or 1) * aging_ms
end

local function queued_ahead(queue_key, active_key, job_id)
  local rank = redis.call("ZRANK", queue_key, job_id)
  local score = tonumber(redis.call("ZSCORE", queue_key, job_id))
  local running = 0
  for _, other in ipairs(redis.call("ZRANGE", active_key, 0, -1)) do
    local other_score = redis.call("ZSCORE", queue_key, other)
    if other_score then
      other_score = tonumber(other_score)
      if other_score < score or (other_score == score and other < job_id) then
        running = running + 1
      end
    end
  end
  return math.max(rank - running, 0)
end
