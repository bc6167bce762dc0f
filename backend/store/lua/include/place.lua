--[[
  place.lua, included by the scripts that place a waiting job (admitJob, announcePositions).

  queue_place(position, active, slots, median[, defer_s]): the job's estimated wait as JSON
  text, by the formula of backend.limits.estimates.eta_s (tests/integration/test_positions.py
  checks that the two agree): the jobs ahead are served ``slots`` at a time, one median run
  a round, after the slots that are free now; never less than ``defer_s``, the time a
  deferred job (a retry's backoff, a Retry-After) must still wait before it may start.

  with_place(view, position, eta): a JobView's JSON with its last two keys, ``position`` and
  ``estimated_wait_s``, set. Inside a JSON string every quote is escaped, so the last
  unescaped ``,"position":`` is the key itself, whatever the prompt says.
]]
local function queue_place(position, active, slots, median, defer_s)
  local wait = 0
  local behind_free = position - math.max(slots - active, 0)
  if behind_free > 0 then
    wait = math.ceil(behind_free / math.max(slots, 1)) * median
  end
  if defer_s and defer_s > wait then
    wait = defer_s
  end
  return string.format("%.1f", wait)
end

local function with_place(view, position, eta)
  local cut, from = nil, 1
  while true do
    local found = string.find(view, ',"position":', from, true)
    if not found then
      break
    end
    cut, from = found, found + 1
  end
  if not cut then
    return view
  end
  return string.sub(view, 1, cut - 1) .. ',"position":' .. position ..
    ',"estimated_wait_s":' .. eta .. "}"
end
