-- Tests for luagent.context. Run: lua5.4 -e 'package.path="../../stdlib/?.lua;./?.lua;"..package.path' context_test.lua
local t = require "testing"
local context = require "luagent.context"

-- A thread as the host hands it to Lua: an object whose :events() returns the events.
local function thread_of(events)
  return { id = "th_1", events = function(self) return events end }
end

local function calculator_events()
  return {
    { id = 1, type = "user_input", data = "can you multiply 3 and 4", at = "2026-11-21T20:00:00.000Z" },
    { id = 2, type = "multiply", data = { intent = "multiply", a = 3, b = 4 }, at = "2026-11-21T20:00:01.000Z" },
    { id = 3, type = "tool_response", data = 12, at = "2026-11-21T20:00:02.000Z" },
    { id = 4, type = "await", data = { kind = "human" }, at = "2026-11-21T20:00:03.000Z" },
    { id = 5, type = "approval", data = { approved = true }, at = "2026-11-21T20:00:04.000Z" },
    { id = 6, type = "human_response", data = "thanks, now add 5", at = "2026-11-21T20:00:05.000Z" },
  }
end

-- The 12-factor template's serializeForLLM: "\n<TAG>\nBODY\n</TAG>\n" per event, joined with "\n".
local CALCULATOR_XML = "\n<user_input>\ncan you multiply 3 and 4\n</user_input>\n"
  .. "\n"
  .. "\n<multiply>\na: 3\nb: 4\n</multiply>\n"
  .. "\n"
  .. "\n<tool_response>\n12\n</tool_response>\n"
  .. "\n"
  .. "\n<human_response>\nthanks, now add 5\n</human_response>\n"

t.test("xml renders the calculator thread exactly like the 12-factor template", function()
  t.eq(context.xml(thread_of(calculator_events())), CALCULATOR_XML)
end)

t.test("xml accepts a plain array of events", function()
  t.eq(context.xml(calculator_events()), CALCULATOR_XML)
end)

t.test("xml of an empty thread is the empty string", function()
  t.eq(context.xml(thread_of({})), "")
end)

t.test("xml shows error and outcome_unknown events (factor 9)", function()
  local out = context.xml({
    { type = "error", data = "tool multiply failed: boom" },
    { type = "outcome_unknown", data = { intent = "charge_card", amount = 5 } },
  })
  t.eq(out, "\n<error>\ntool multiply failed: boom\n</error>\n\n\n<charge_card>\namount: 5\n</charge_card>\n")
end)

t.test("xml says why a call's outcome is unknown", function()
  local out = context.xml({
    { type = "outcome_unknown", data = { call = 4, reason = "interrupted" } },
    { type = "outcome_unknown", data = { call = 6, reason = "abandoned" } },
  })
  t.eq(out, "\n<outcome_unknown>\nthe tool call in event 4 started but its outcome was never " ..
    "recorded (the host stopped); it may or may not have run\n</outcome_unknown>\n\n\n" ..
    "<outcome_unknown>\nthe tool call in event 6 started but its outcome was never recorded " ..
    "(the coroutine running the tool was abandoned); it may or may not have run\n</outcome_unknown>\n")
end)

t.test("xml hides every host-internal event type by default", function()
  local events = {}
  for _, ty in ipairs { "await", "approval", "tool_started", "done", "cancelled", "llm_call" } do
    events[#events + 1] = { type = ty, data = "x" }
  end
  events[#events + 1] = { type = "user_input", data = "hi" }
  t.eq(context.xml(events), "\n<user_input>\nhi\n</user_input>\n")
end)

t.test("xml writes table data in sorted key order without intent", function()
  local out = context.xml({ { type = "tool_call", data = { intent = "search", zeta = "z", alpha = "a", mid = true } } })
  t.eq(out, "\n<search>\nalpha: a\nmid: true\nzeta: z\n</search>\n")
end)

t.test("xml writes nested lists and maps inline", function()
  local out = context.xml({ { type = "plan", data = { steps = { "a", "b" }, opts = { depth = 2, fast = false }, empty = {} } } })
  t.eq(out, "\n<plan>\nempty: {}\nopts: {depth: 2, fast: false}\nsteps: [a, b]\n</plan>\n")
end)

t.test("xml writes numbers as JavaScript does (no .0 on whole floats)", function()
  local out = context.xml({ { type = "tool_response", data = 12.0 }, { type = "tool_response", data = 0.1 } })
  t.eq(out, "\n<tool_response>\n12\n</tool_response>\n\n\n<tool_response>\n0.1\n</tool_response>\n")
end)

t.test("xml strips leading whitespace of every line like the template; keep_indent keeps it", function()
  local events = { { type = "tool_response", data = "def f():\n    return 1" } }
  t.eq(context.xml(events), "\n<tool_response>\ndef f():\nreturn 1\n</tool_response>\n")
  t.eq(context.xml(events, { keep_indent = true }),
    "\n<tool_response>\ndef f():\n    return 1\n</tool_response>\n")
end)

t.test("xml strips indentation wherever a body line starts: first line, after CR, tabs", function()
  t.eq(context.xml({ { type = "note", data = "  lead" } }), "\n<note>\nlead\n</note>\n")
  t.eq(context.xml({ { type = "note", data = "a\r\t\tb\n \tc" } }), "\n<note>\na\rb\nc\n</note>\n")
  t.eq(context.xml({ { type = "note", data = "a\nb  c\n" } }), "\n<note>\na\nb  c\n\n</note>\n")
  t.eq(context.xml({ { type = "step", data = { intent = "step", x = "1\n  2" } } }), "\n<step>\nx: 1\n2\n</step>\n")
end)

t.test("xml strips indentation after a line break inside an intent, as the template does", function()
  t.eq(context.xml({ { type = "step", data = { intent = "a\n  b", x = 1 } } }), "\n<a\nb>\nx: 1\n</a\nb>\n")
end)

t.test("xml uses the type when intent is missing or data is not a table", function()
  t.eq(context.xml({ { type = "note", data = { text = "x" } } }), "\n<note>\ntext: x\n</note>\n")
  t.eq(context.xml({ { type = "flag", data = false } }), "\n<flag>\nfalse\n</flag>\n")
  t.eq(context.xml({ { type = "ping" } }), "\n<ping>\n\n</ping>\n")
end)

t.test("skip extends the hidden set and false un-hides a default", function()
  local ev = calculator_events()
  local out = context.xml(ev, { skip = { tool_response = true, await = false } })
  t.eq(out, "\n<user_input>\ncan you multiply 3 and 4\n</user_input>\n\n"
    .. "\n<multiply>\na: 3\nb: 4\n</multiply>\n\n"
    .. "\n<await>\nkind: human\n</await>\n\n"
    .. "\n<human_response>\nthanks, now add 5\n</human_response>\n")
end)

t.test("skip matches an intent as well as a type", function()
  local out = context.xml(calculator_events(), { skip = { multiply = true } })
  t.ok(not out:find("<multiply>", 1, true), out)
  t.ok(out:find("<tool_response>", 1, true), out)
end)

t.test("only keeps the listed types and ignores the hidden set", function()
  local out = context.xml(calculator_events(), { only = { approval = true, tool_response = true } })
  t.eq(out, "\n<tool_response>\n12\n</tool_response>\n\n\n<approval>\napproved: true\n</approval>\n")
end)

t.test("last keeps the last N visible events", function()
  local out = context.xml(calculator_events(), { last = 2 })
  t.eq(out, "\n<tool_response>\n12\n</tool_response>\n\n\n<human_response>\nthanks, now add 5\n</human_response>\n")
end)

t.test("truncate cuts each body by UTF-8 characters with a marker", function()
  local out = context.xml({ { type = "tool_response", data = "héllo wörld" } }, { truncate = 5 })
  t.eq(out, "\n<tool_response>\nhéllo...[truncated 6 chars]\n</tool_response>\n")
  t.eq(context.xml({ { type = "tool_response", data = "short" } }, { truncate = 5 }),
    "\n<tool_response>\nshort\n</tool_response>\n")
end)

t.test("format overrides, drops or falls back per event", function()
  local out = context.xml(calculator_events(), {
    format = function(e)
      if e.type == "tool_response" then return "<result>" .. e.data .. "</result>" end
      if e.type == "user_input" then return false end
      return nil
    end,
  })
  t.eq(out, "\n<multiply>\na: 3\nb: 4\n</multiply>\n\n<result>12</result>\n"
    .. "\n<human_response>\nthanks, now add 5\n</human_response>\n")
end)

t.test("bad input and bad options are clear errors", function()
  t.raises(function() context.xml("nope") end, "context.xml: expected a thread or an array of events, got string")
  t.raises(function() context.xml({ { data = 1 } }) end, "event 1 is not a table with a string 'type'")
  t.raises(function() context.xml({}, { last = -1 }) end, "opts.last must be a non%-negative integer")
  t.raises(function() context.xml({}, { skip = "await" }) end, "opts.skip must be a table")
  t.raises(function() context.yaml({}, { format = 3 }) end, "opts.format must be a function")
  t.raises(function() context.xml_event({ data = 1 }) end,
    "context.xml_event: expected an event %(a table with a string 'type'%), got a table with no string 'type'")
  t.raises(function() context.xml_event(5) end, "got number")
  t.raises(function() context.xml_event({ type = "x" }, 3) end, "context.xml_event: options must be a table")
  -- Errors of the shape every luagent module raises: a script reads err.code.
  local ok, err = pcall(context.tokens, 5)
  t.eq(ok, false)
  t.eq(type(err), "table")
  t.eq(err.code, "usage")
  t.eq(tostring(err), "context.tokens: expected a string, got number [usage]")
end)

t.test("xml survives a table that contains itself", function()
  local data = { name = "loop" }
  data.self = data
  t.eq(context.xml({ { type = "x", data = data } }), "\n<x>\nname: loop\nself: <cycle>\n</x>\n")
end)

-- The fast paths of context.xml (keys sorted without a comparator, numbers printed once,
-- plain strings remembered, no copy of HIDDEN) must give what the general code gives.

t.test("xml sorts keys of mixed types numbers first, then strings", function()
  local data = { intent = "m", b = 1, a = 2, [10] = "ten", [2] = "two", [1.5] = "x" }
  t.eq(context.xml({ { type = "m", data = data } }), "\n<m>\n1.5: x\n2: two\n10: ten\na: 2\nb: 1\n</m>\n")
  t.eq(context.xml({ { type = "n", data = { v = { z = 1, [3] = "c", [1.5] = "h" } } } }),
    "\n<n>\nv: {1.5: h, 3: c, z: 1}\n</n>\n")
end)

t.test("xml sorts number keys by value and string keys of every count", function()
  t.eq(context.xml({ { type = "n", data = { [100] = "h", [9] = "i", [10] = "j" } } }), "\n<n>\n9: i\n10: j\n100: h\n</n>\n")
  local names = { "delta", "alpha", "echo", "charlie", "bravo" }
  for count = 1, #names do
    for rotation = 1, count do
      local data, expected = {}, {}
      for i = 1, count do data[names[(i + rotation - 2) % count + 1]] = i end
      for i = 1, count do expected[i] = names[i] end
      table.sort(expected)
      for i, k in ipairs(expected) do expected[i] = k .. ": " .. data[k] end
      t.eq(context.xml({ { type = "s", data = data } }), "\n<s>\n" .. table.concat(expected, "\n") .. "\n</s>\n")
    end
  end
end)

t.test("xml marks cycles but not a table reached twice", function()
  local shared = { x = 1 }
  t.eq(context.xml({ { type = "s", data = { a = shared, b = shared, c = { shared } } } }),
    "\n<s>\na: {x: 1}\nb: {x: 1}\nc: [{x: 1}]\n</s>\n")
  local data = { child = {} }
  data.child.parent = data
  data.child.self = data.child
  t.eq(context.xml({ { type = "c", data = data } }), "\n<c>\nchild: {parent: <cycle>, self: <cycle>}\n</c>\n")
end)

t.test("xml writes numbers the same the first time and after", function()
  local values = { 6.0, 6, -0.0, 1000.0, -1000, 1001, 2 ^ 53, 2 ^ 53 + 2, 9007199254740993, math.maxinteger,
    0.1, 1 / 3, 1e300, 1e21, -2.5, 0 / 0, math.huge, -math.huge }
  local expected = { "6", "6", "0", "1000", "-1000", "1001", "9007199254740992", "9007199254740994",
    "9007199254740993", "9223372036854775807", "0.1", "0.3333333333333333", "1e+300", "1e+21", "-2.5",
    "NaN", "Infinity", "-Infinity" }
  for _ = 1, 2 do
    for i, v in ipairs(values) do
      t.eq(context.xml({ { type = "r", data = v } }), "\n<r>\n" .. expected[i] .. "\n</r>\n")
      t.eq(context.xml({ { type = "r", data = { intent = "r", v = v } } }), "\n<r>\nv: " .. expected[i] .. "\n</r>\n")
    end
  end
end)

t.test("xml strips indentation that keys bring, the first time and after", function()
  for _ = 1, 2 do
    t.eq(context.xml({ { type = "k", data = { intent = "k", [" lead"] = 1, b = 2 } } }), "\n<k>\nlead: 1\nb: 2\n</k>\n")
    t.eq(context.xml({ { type = "k", data = { ["a\n  b"] = 1 } } }), "\n<k>\na\nb: 1\n</k>\n")
    t.eq(context.xml({ { type = "k", data = { ["\tx"] = true } } }), "\n<k>\nx: true\n</k>\n")
    t.eq(context.xml({ { type = "k", data = { ["\tx"] = true } } }, { keep_indent = true }), "\n<k>\n\tx: true\n</k>\n")
  end
end)

t.test("context.HIDDEN is shared by every run: read-only to agents, skip changes it per call", function()
  local events = { { type = "user_input", data = "hi" }, { type = "note", data = "n" } }
  local ok, err = pcall(function() context.HIDDEN.note = true end)
  t.ok(not ok and tostring(err):find("cannot change the shared library table", 1, true), tostring(err))
  t.eq(context.HIDDEN.note, nil)
  t.eq(context.xml(events, { skip = { note = true } }), "\n<user_input>\nhi\n</user_input>\n")
  t.eq(context.xml(events, { skip = { await = false } }), "\n<user_input>\nhi\n</user_input>\n\n\n<note>\nn\n</note>\n")
  t.eq(context.HIDDEN.await, true)
end)

t.test("last with only, with format, beyond the count, and zero", function()
  local ev = calculator_events()
  t.eq(context.xml(ev, { only = { approval = true, tool_response = true, multiply = true }, last = 2 }),
    "\n<tool_response>\n12\n</tool_response>\n\n\n<approval>\napproved: true\n</approval>\n")
  t.eq(context.xml(ev, { last = 1, format = function(e) return e.type end }), "human_response")
  t.eq(context.xml(ev, { last = 99 }), CALCULATOR_XML)
  t.eq(context.xml(ev, { last = 0 }), "")
end)

t.test("format results other than a string or false keep the default rendering", function()
  t.eq(context.xml({ { type = "tool_response", data = 12 } }, { format = function() return 7 end }),
    "\n<tool_response>\n12\n</tool_response>\n")
end)

t.test("xml_event renders one event, options or not", function()
  local e = { type = "tool_response", data = { call = 1, result = "  two\n  lines" } }
  t.eq(context.xml_event(e), "\n<tool_response>\ntwo\nlines\n</tool_response>\n")
  t.eq(context.xml_event(e, { keep_indent = true, truncate = 5 }), "\n<tool_response>\n  two...[truncated 8 chars]\n</tool_response>\n")
end)

t.test("yaml renders the calculator thread", function()
  t.eq(context.yaml(thread_of(calculator_events())), table.concat({
    "- type: user_input",
    "  data: can you multiply 3 and 4",
    "- type: multiply",
    "  data:",
    "    a: 3",
    "    b: 4",
    "    intent: multiply",
    "- type: tool_response",
    "  data: 12",
    "- type: human_response",
    "  data: thanks, now add 5",
    "",
  }, "\n"))
end)

t.test("yaml quotes strings that would not read back as themselves", function()
  local out = context.yaml({
    { type = "a", data = "yes" },
    { type = "b", data = "12" },
    { type = "c", data = "key: value" },
    { type = "d", data = "" },
    { type = "e", data = " padded" },
    { type = "f", data = "- dash" },
    { type = "g", data = 'say "hi"\t' },
    { type = "h", data = { ".inf", "-.Inf", "+.INF", ".NaN", ".nan", ".info", "nan" } },
  })
  t.eq(out, table.concat({
    '- type: a', '  data: "yes"',
    '- type: b', '  data: "12"',
    '- type: c', '  data: "key: value"',
    '- type: d', '  data: ""',
    '- type: e', '  data: " padded"',
    '- type: f', '  data: "- dash"',
    '- type: g', '  data: "say \\"hi\\"\\t"',
    -- YAML reads these as infinity and NaN ("nan" and ".info" are only strings)
    '- type: h', '  data:', '    - ".inf"', '    - "-.Inf"', '    - "+.INF"', '    - ".NaN"',
    '    - ".nan"', '    - .info', '    - nan',
    '',
  }, "\n"))
end)

t.test("yaml writes multi-line strings as literal blocks and lists of maps compactly", function()
  local out = context.yaml({
    { type = "note", data = { text = "line 1\nline 2\n", items = { { a = 1, b = 2 }, "x" }, tail = "no newline\nend" } },
  })
  t.eq(out, table.concat({
    "- type: note",
    "  data:",
    "    items:",
    "      - a: 1",
    "        b: 2",
    "      - x",
    "    tail: |-",
    "      no newline",
    "      end",
    "    text: |",
    "      line 1",
    "      line 2",
    "",
  }, "\n"))
end)

t.test("messages maps events to OpenAI roles", function()
  t.eq(context.messages(thread_of(calculator_events()), { system = "You are a calculator." }), {
    { role = "system", content = "You are a calculator." },
    { role = "user", content = "can you multiply 3 and 4" },
    { role = "assistant", content = '{"a":3,"b":4,"intent":"multiply"}' },
    { role = "user", content = "<tool_response>\n12\n</tool_response>" },
    { role = "user", content = "thanks, now add 5" },
  })
end)

t.test("messages honours skip and last", function()
  t.eq(context.messages(calculator_events(), { last = 1, skip = { human_response = true } }), {
    { role = "user", content = "<tool_response>\n12\n</tool_response>" },
  })
end)

t.test("tokens estimates ceil(utf8 chars / 4)", function()
  t.eq(context.tokens(""), 0)
  t.eq(context.tokens("abcd"), 1)
  t.eq(context.tokens("abcde"), 2)
  t.eq(context.tokens("héllo wörld"), 3) -- 11 characters, 13 bytes
  t.raises(function() context.tokens(nil) end, "expected a string")
end)

t.test("set_tokenizer replaces the estimate and nil restores it", function()
  context.set_tokenizer(function(text, model) return #text * 10 + (model and 1 or 0) end)
  t.eq(context.tokens("ab", "m"), 21)
  context.set_tokenizer(nil)
  t.eq(context.tokens("ab"), 1)
end)

t.run()
