-- The gate guard: looks around, walks up to strangers and challenges them.
-- Its world tools are C++ functions of the game (main.cpp), reached through luagent.host.
local llm, context, prompt = require "luagent.llm", require "luagent.context", require "luagent.prompt"
local host = require "luagent.host"
local next_step = prompt.file "next_step.prompt"

local intents = {
  look_around = { radius = "number" },
  move_to = { x = "number", y = "number" },
  say = { text = "string" },
}

return function(thread)
  for _ = 1, 8 do
    local step = llm.json(next_step:messages { thread = context.xml(thread), role = "gate guard" },
      llm.one_of(intents))
    thread:push(step.intent, step)
    if step.intent == "say" then
      host.call("say", { text = step.text })
      return thread
    end
    thread:execute(step, host.tool(step.intent))
  end
  return thread
end
