-- Prompt tests for the calculator: the 12-factor template's tests (agent.baml), ported.
-- Run offline against the cassette: luagent eval examples/calculator/evals.lua
-- (or live: --provider openai). Each case is the thread so far and what the next
-- decision must be.
local ask = "can you multiply 3 and 4, then divide the result by 2 and then add 12 to that result"

return {
  {
    name = "HelloWorld",
    agent = ".",
    input = "hello!",
    expect = { intent = "request_more_information" },
  },
  {
    name = "MathOperation",
    agent = ".",
    input = "can you multiply 3 and 4",
    expect = { intent = "multiply", fields = { a = 3, b = 4 } },
  },
  {
    name = "LongMath",
    agent = ".",
    input = {
      { type = "user_input", data = ask },
      { type = "multiply", data = { intent = "multiply", a = 3, b = 4 } },
      { type = "tool_response", data = 12 },
      { type = "divide", data = { intent = "divide", a = 12, b = 2 } },
      { type = "tool_response", data = 6 },
      { type = "add", data = { intent = "add", a = 6, b = 12 } },
      { type = "tool_response", data = 18 },
    },
    expect = {
      intent = "done_for_now",
      contains = "18",
      check = function(step) return step.message:find("18", 1, true) ~= nil, "no 18 in the answer" end,
    },
  },
  {
    name = "MathOperationWithClarification",
    agent = ".",
    input = "can you multiply 3 and fe1iiaff10",
    expect = { intent = "request_more_information" },
  },
  {
    name = "MathOperationPostClarification",
    agent = ".",
    input = {
      { type = "user_input", data = "can you multiply 3 and fe1iiaff10" },
      { type = "request_more_information",
        data = { intent = "request_more_information",
                 message = "What number should I use instead of fe1iiaff10?" } },
      { type = "human_response", data = "lets try 12 instead" },
    },
    expect = { intent = "multiply", fields = { a = 3, b = 12 } },
  },
}
