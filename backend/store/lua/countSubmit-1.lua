--[[
  countSubmit: the per-user submit rate, checked and counted in one step (include/rate.lua).

  KEYS[1]  sq:user:{user}:submits   string, submissions in the current window, PX = window

  ARGV[1]  submissions allowed per window
  ARGV[2]  window (ms)

  Returns {1, count}       admitted: the count in this window, this one included
          {0, retry_ms}    refused: the window closes in retry_ms
]]
--@include rate
local admitted, value = count_submit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return {admitted, value}
