-- A deterministic stand-in for the model, used with the `script` provider to
-- record cassette.jsonl where no live model is reachable. It reads the thread from
-- the prompt the way a model would and answers the four 12-factor scenarios.
-- Re-record against a live model instead with:
--   LUAGENT_RECORD=cassette.jsonl luagent run . "..." --provider openai
local OPS = { add = true, subtract = true, multiply = true, divide = true }

local function events_of(text)
  local events = {}
  for tag, body in text:gmatch("<([%w_]+)>\n(.-)\n</%1>") do
    events[#events + 1] = { tag = tag, body = body }
  end
  return events
end

-- "multiply 3 and 4, then divide the result by 2 and then add 12 to that result"
local function plan_of(request)
  local plan = {}
  for clause in (request:lower() .. ","):gmatch("([^,]+)") do
    for part in (clause .. " then "):gmatch("(.-) then ") do
      local op, rest = part:match("(%a+)%s+(.*)")
      while op and not OPS[op] do op, rest = rest:match("(%a+)%s+(.*)") end
      if op then
        local a, b
        if op == "add" then
          b, a = rest:match("^(%S+) to (.+)$")
          if not b then a, b = rest:match("^(%S+) and (%S+)") end
        else
          a, b = rest:match("^(.-) by (%S+)")
          if not a then a, b = rest:match("^(%S+) and (%S+)") end
        end
        plan[#plan + 1] = { op = op, a = a, b = b }
      end
    end
  end
  return plan
end

local function value(word, previous)
  if word == nil then return nil end
  if word:find("result") then return previous end
  return tonumber(word)
end

return function(request)
  local text = request.messages[#request.messages].content
  local events = events_of(text)
  local plan, results, fixes = {}, {}, {}
  local asked -- the word the last request_more_information asked about
  for _, e in ipairs(events) do
    if e.tag == "user_input" then plan = plan_of(e.body) end
    if e.tag == "tool_response" then results[#results + 1] = tonumber(e.body) end
    if e.tag == "request_more_information" then asked = e.body:match("instead of ([^%s?]+)") end
    if e.tag == "human_response" then
      local new, old = e.body:match("use (%S+) instead of (%S+)")
      if new then
        fixes[old] = new
      elseif asked and e.body:match("%d+") then -- "lets try 12 instead"
        fixes[asked] = e.body:match("%d+")
      end
    end
  end
  if #plan == 0 then -- a greeting, or nothing to calculate
    return '{"intent": "request_more_information", "message": "Hello! What calculation should I do?"}'
  end
  local step = plan[#results + 1]
  if not step then
    return string.format('{"intent": "done_for_now", "message": "The result is %s."}',
      tostring(results[#results]))
  end
  local a = value(fixes[step.a] or step.a, results[#results])
  local b = value(fixes[step.b] or step.b, results[#results])
  if a == nil or b == nil then
    local missing = a == nil and step.a or step.b
    return string.format('{"intent": "request_more_information", "message": "What number should I use instead of %s?"}', missing)
  end
  -- A model answers in prose around a fenced block now and then; the host recovers it.
  return string.format('```json\n{"intent": "%s", "a": %s, "b": %s}\n```', step.op, a, b)
end
