-- The calculator agent: parity with the 12-factor-agents template.
-- add, subtract and multiply run at once; divide pauses for a human's approval;
-- request_more_information waits for the human; done_for_now ends the thread.
local llm = require "luagent.llm"
local context = require "luagent.context"
local prompt = require "luagent.prompt"

local next_step = prompt.file "next_step.prompt" -- re-read when the file changes

local intents = { -- factor 4: tools are structured outputs
  add = { a = "number", b = "number" },
  subtract = { a = "number", b = "number" },
  multiply = { a = "number", b = "number" },
  divide = { a = "number", b = "number" },
  request_more_information = { message = "string" },
  done_for_now = { message = "string" },
}

local tools = {
  add = function(c) return c.a + c.b end,
  subtract = function(c) return c.a - c.b end,
  multiply = function(c) return c.a * c.b end,
  divide = function(c)
    if c.b == 0 then error("cannot divide by zero") end
    return c.a / c.b
  end,
}

-- The tools are pure arithmetic: after a crash mid-call they may simply run again
-- (a tool with side effects leaves this out and gets outcome_unknown instead).
local PURE = { idempotent = true }

return function(thread) -- factor 12: thread in, thread out
  -- Resumed after a pause? The call that waited, and what the human said.
  local call, answer = thread:resumed()
  if call and answer.approved then
    thread:execute(call, tools[call.intent], PURE) -- exactly once, even if re-run
  elseif call and answer.approved == false then
    thread:push("human_response", "user denied the operation with feedback: " .. (answer.comment or ""))
  end
  while true do
    local step = llm.json(next_step:messages { thread = context.xml(thread) }, llm.one_of(intents))
    thread:push(step.intent, step)
    if step.intent == "divide" then
      return thread:await("approval", step) -- pause between selection and execution
    elseif tools[step.intent] then
      thread:execute(step, tools[step.intent], PURE) -- records tool_response
    elseif step.intent == "done_for_now" then
      return thread -- the final answer; the thread is done
    else
      return thread:await("human", step) -- a question for the human
    end
  end
end
