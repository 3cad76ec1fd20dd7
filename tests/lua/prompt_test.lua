-- Tests for luagent.prompt. Run: lua5.4 -e 'package.path="../../stdlib/?.lua;./?.lua;"..package.path' prompt_test.lua
local t = require "testing"

-- The real luagent.source is a host binding; here an in-memory file table stands in for it.
local files = {}    -- path -> text
local versions = {} -- path -> version, bumped by write()
local reads = 0

local function write(path, text)
  files[path] = text
  versions[path] = (versions[path] or 0) + 1
end

local fake_source = {
  read = function(path)
    reads = reads + 1
    if not files[path] then error("no such file: " .. path, 0) end
    return files[path], versions[path]
  end,
}

-- Under the system interpreter the fake is found the way the binding will be, through
-- require; inside the sandbox (no `package`) it is installed with prompt.set_loader.
local has_preload = type(package) == "table" and type(package.preload) == "table"
if has_preload then package.preload["luagent.source"] = function() return fake_source end end

local prompt = require "luagent.prompt"
if not has_preload then prompt.set_loader(fake_source.read) end
local context = require "luagent.context"

local function render(src, vars, opts) return prompt.template(src, opts)(vars) end
local function compiles() return prompt.stats().compiles end

-- output and paths -------------------------------------------------------

t.test("plain text passes through byte for byte, quotes and brackets included", function()
  local src = "say \"hi\" ]] [[ \\n ]=] %s\n\ttab\0nul"
  t.eq(render(src), src)
end)

t.test("outputs dotted paths and indexes", function()
  t.eq(render("{{ user.name }} / {{ items[2] }} / {{ map[\"a b\"] }} / {{ items[1].x }}",
    { user = { name = "Ada" }, items = { { x = "first" }, "second" }, map = { ["a b"] = 7 } }),
    "Ada / second / 7 / first")
end)

t.test("undefined variables and paths through non-tables render empty", function()
  t.eq(render("[{{ nope }}][{{ user.name.first }}][{{ s.x }}]", { s = "str" }), "[][][]")
end)

t.test("numbers and booleans render like JSON", function()
  t.eq(render("{{ a }} {{ b }} {{ c }} {{ d }}", { a = 2.0, b = 1.5, c = true, d = -7 }), "2 1.5 true -7")
end)

t.test("tables render as JSON", function()
  t.eq(render("{{ v }}", { v = { b = { 1, 2 }, a = "x" } }), '{"a":"x","b":[1,2]}')
end)

t.test("variable values are never interpreted as template or Lua", function()
  t.eq(render("{{ v }}", { v = "{{ x }} ]] .. error('x') .. [[" }), "{{ x }} ]] .. error('x') .. [[")
end)

t.test("a thread rendered by context.xml is the usual variable", function()
  local next_step = prompt.template("Thread so far:\n{{ thread }}\nWhat next?")
  local thread = { events = function() return { { type = "user_input", data = "hi" } } end }
  t.eq(next_step { thread = context.xml(thread) }, "Thread so far:\n\n<user_input>\nhi\n</user_input>\n\nWhat next?")
end)

-- filters ------------------------------------------------------------------

t.test("prompt.trim strips what %s matches at both ends and nothing inside", function()
  t.eq(prompt.trim(" \t\n\v\f\r x  y \r\n\t "), "x  y")
  t.eq(prompt.trim("x"), "x")
  t.eq(prompt.trim(""), "")
  t.eq(prompt.trim(" \n\t "), "")
  t.eq(prompt.trim("\0 a\0"), "\0 a\0")
end)

t.test("upper, lower and trim", function()
  t.eq(render("{{ a | upper }}|{{ a | lower }}|{{ b | trim }}|", { a = "MiXed", b = "  pad \n" }), "MIXED|mixed|pad|")
end)

t.test("json filter encodes strings, arrays and objects", function()
  t.eq(render("{{ s | json }} {{ l | json }} {{ o | json }} {{ n | json }}",
    { s = 'a"b\n', l = { 1, "two", false }, o = { k = 1 } }), '"a\\"b\\n" [1,"two",false] {"k":1} null')
end)

t.test("default replaces nil, and falsy values when asked", function()
  t.eq(render('{{ a | default("x") }} {{ b | default("x") }} {{ c | default("x", true) }} {{ c | default("x") }}.',
    { b = "set", c = "" }), "x set x .")
end)

t.test("join joins list items, with an empty separator by default", function()
  t.eq(render('{{ l | join(", ") }} {{ l | join }} {{ s | join("-") }}', { l = { "a", 1, true }, s = "str" }),
    "a, 1, true a1true str")
end)

t.test("filters chain left to right, and length counts", function()
  t.eq(render('{{ name | trim | upper }} {{ l | length }} {{ s | length }}', { name = " bo ", l = { 1, 2, 3 }, s = "héé" }),
    "BO 3 3")
end)

t.test("custom filters from opts.filters", function()
  local tpl = prompt.template('{{ x | twice("!") }}', { filters = { twice = function(v, suffix) return v .. v .. suffix end } })
  t.eq(tpl { x = "ab" }, "abab!")
end)

t.test("unknown filter is a compile error with its line", function()
  t.raises(function() prompt.template("line1\n{{ x | shout }}") end, "^template:2: unknown filter 'shout'")
end)

-- loops ----------------------------------------------------------------------

t.test("for loops expose loop.index, index0, first, last and length", function()
  t.eq(render("{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ x }}{% if loop.first %}F{% endif %}"
    .. "{% if loop.last %}L{{ loop.length }}{% endif %};{% endfor %}", { l = { "a", "b", "c" } }),
    "10aF;21b;32cL3;")
end)

t.test("for k, v iterates a map in sorted key order", function()
  t.eq(render("{% for k, v in m %}{{ k }}={{ v }} {% endfor %}", { m = { zeta = 1, alpha = 2, mid = 3 } }),
    "alpha=2 mid=3 zeta=1 ")
end)

t.test("for with one variable over a map gives its sorted keys", function()
  t.eq(render("{% for k in m %}{{ k }},{% endfor %}", { m = { b = 1, a = 2 } }), "a,b,")
end)

t.test("nested loops shadow outer names and restore them after", function()
  t.eq(render("{% for x in outer %}{% for x in inner %}{{ x }}{{ loop.index }}{% endfor %}{{ x }}{{ loop.index }}|{% endfor %}{{ x }}",
    { outer = { "A", "B" }, inner = { "a", "b" }, x = "top" }), "a1b2A1|a1b2B2|top")
end)

t.test("looping over nil renders nothing; over a string is an error with its line", function()
  t.eq(render("[{% for x in nope %}{{ x }}{% endfor %}]"), "[]")
  t.raises(function() render("\n\n{% for x in s %}{% endfor %}", { s = "abc" }) end,
    "^template:3: cannot loop over a string %('s'%)")
end)

-- conditions -----------------------------------------------------------------

t.test("if / elif / else picks the first true branch", function()
  local tpl = prompt.template("{% if n == 1 %}one{% elif n == 2 %}two{% elif n > 2 %}many{% else %}none{% endif %}")
  t.eq({ tpl { n = 1 }, tpl { n = 2 }, tpl { n = 5 }, tpl { n = 0 } }, { "one", "two", "many", "none" })
end)

t.test("not, and, or, ~=, != and comparisons against literals", function()
  local tpl = prompt.template("{% if not a and (b or c) %}1{% endif %}{% if s != 'x' %}2{% endif %}"
    .. "{% if s ~= \"y\" %}3{% endif %}{% if n >= 3 and n <= 3 and n < 4 %}4{% endif %}{% if s < 'z' %}5{% endif %}")
  t.eq(tpl { a = false, c = true, s = "y", n = 3 }, "1245")
  t.eq(tpl { a = true, s = "x", n = 9 }, "35")
end)

t.test("truthiness: nil, false, empty string and empty table are false; 0 is true", function()
  local tpl = prompt.template("{% if v %}T{% else %}F{% endif %}")
  t.eq({ tpl {}, tpl { v = false }, tpl { v = "" }, tpl { v = {} }, tpl { v = 0 }, tpl { v = { 1 } }, tpl { v = "x" } },
    { "F", "F", "F", "F", "T", "T", "T" })
end)

t.test("or and and return values, so 'or' gives a fallback", function()
  t.eq(render("{{ nick or name }}/{{ a and b }}", { name = "Ada", a = 1, b = "B" }), "Ada/B")
end)

t.test("negative number literals compare", function()
  t.eq(render("{% if n == -1 and m > -2.5 %}yes{% endif %}", { n = -1, m = 0 }), "yes")
end)

t.test("comparing different types with < is an error naming the line", function()
  t.raises(function() render("\n{% if n < 'x' %}{% endif %}", { n = 1 }) end,
    "^template:2: cannot compare number with string using '<'")
end)

t.test("literals: true, false, nil, numbers and escaped strings", function()
  t.eq(render([[{% if x == nil and true and not false and 1.5 == 1.5 %}{{ "a\"b\n" }}{% endif %}]]), 'a"b\n')
end)

-- comments and whitespace control -------------------------------------------------

t.test("comments disappear, including ones holding tag syntax", function()
  t.eq(render("a{# {{ x }} {% if %} #}b{# multi\nline #}c"), "abc")
end)

t.test("whitespace control strips on the marked side only", function()
  t.eq(render("a  \n  {{- x -}}  \n  b", { x = "X" }), "aXb")
  t.eq(render("a  {{- x }}  b", { x = "X" }), "aX  b")
  t.eq(render("<ul>\n{%- for i in l %}\n  <li>{{ i }}</li>\n{%- endfor %}\n</ul>", { l = { 1, 2 } }),
    "<ul>\n  <li>1</li>\n  <li>2</li>\n</ul>")
  t.eq(render("a {#- note -#} b"), "ab")
end)

-- strict mode ------------------------------------------------------------------

t.test("strict mode makes an undefined output an error naming the variable and line", function()
  local tpl = prompt.template("Hello\n{{ user.name }}", { strict = true })
  t.eq(tpl { user = { name = "x" } }, "Hello\nx")
  t.raises(function() tpl { user = {} } end, "^template:2: undefined variable 'user.name'$")
  t.raises(function() prompt.template("{{ items[3] | upper }}", { strict = true }) { items = {} } end,
    "undefined variable 'items%[3%]'")
  t.raises(function() prompt.template("{% for x in l %}{% endfor %}", { strict = true }) {} end,
    "^template:1: undefined variable 'l'")
end)

t.test("strict mode still allows default, if tests and or-fallbacks", function()
  local tpl = prompt.template('{{ a | default("d") }}{% if b %}B{% endif %}{{ c or "C" }}', { strict = true })
  t.eq(tpl {}, "dC")
end)

-- syntax errors ------------------------------------------------------------------

t.test("syntax errors say name:line: what", function()
  t.raises(function() prompt.template("a\nb\n{{ x ") end, "^template:3: '{{' is never closed with '}}'")
  t.raises(function() prompt.template("{% frobnicate %}") end, "^template:1: unknown tag 'frobnicate'")
  t.raises(function() prompt.template("x\n{% endfor %}") end, "^template:2: 'endfor' without a matching 'for'")
  t.raises(function() prompt.template("\n{% if a %}\n{% for x in l %}\n{% endif %}") end,
    "^template:4: 'endif' without a matching 'if' %(the open block is 'for' from line 3%)")
  t.raises(function() prompt.template("\n\n{% if a %}never closed") end, "^template:3: 'if' is never closed with 'endif'")
  t.raises(function() prompt.template("{{ a +  b }}") end, "^template:1: unexpected character '%+'")
  t.raises(function() prompt.template("{{ a b }}") end, "^template:1: unexpected 'b'")
  t.raises(function() prompt.template("{% else %}") end, "'else' without a matching 'if'")
  t.raises(function() prompt.template("{% if a %}{% else %}{% elif b %}{% endif %}") end, "'elif' after 'else'")
  t.raises(function() prompt.template('{{ "open }}') end, "never closed")
end)

t.test("errors use opts.name as the template name", function()
  t.raises(function() prompt.template("\n{% endif %}", { name = "next_step.prompt" }) end, "^next_step.prompt:2: ")
end)

t.test("templates cannot run Lua: calls and unknown syntax are rejected", function()
  t.raises(function() prompt.template("{{ os.exit() }}") end, "^template:1: unexpected '%('")
  t.raises(function() prompt.template("{{ load('x')() }}") end, "^template:1: unexpected '%('")
  t.raises(function() prompt.template("{% lua os.exit() %}") end, "unknown tag 'lua'")
  -- os here is only a template variable, looked up in the vars table
  t.eq(render("{{ os.exit }}", { os = { exit = "no" } }), "no")
end)

t.test("deep nesting is refused with a clear error", function()
  t.raises(function() prompt.template("{{ " .. string.rep("(", 200) .. "x" .. string.rep(")", 200) .. " }}") end,
    "nested deeper than")
  t.raises(function() prompt.template(string.rep("{% if a %}", 100) .. string.rep("{% endif %}", 100)) end,
    "blocks nested deeper than")
end)

t.test("variables must be a table", function()
  t.raises(function() prompt.template("x")("str") end, "template variables must be a table, got string")
end)

-- role markers ------------------------------------------------------------------

local CHAT = [[
{{ role "system" }}
You are a calculator.
{{ role "user" }}
{% for e in events %}{{ e }}
{% endfor %}
{{ role "assistant" }}
OK.
]]

t.test("role markers split the rendered text into chat messages", function()
  t.eq(prompt.template(CHAT):messages { events = { "3*4", "+5" } }, {
    { role = "system", content = "You are a calculator." },
    { role = "user", content = "3*4\n+5" },
    { role = "assistant", content = "OK." },
  })
end)

t.test("rendering to a string leaves no role markers or their lines behind", function()
  t.eq(prompt.template(CHAT) { events = { "3*4" } }, "You are a calculator.\n3*4\n\nOK.\n")
end)

t.test("text before the first marker is a default-role message unless blank", function()
  t.eq(prompt.template("intro\n{{ role \"assistant\" }}\nyes"):messages(),
    { { role = "user", content = "intro" }, { role = "assistant", content = "yes" } })
  t.eq(prompt.template("\n  \n  {{ role \"system\" }}\nsys", { default_role = "system" }):messages(),
    { { role = "system", content = "sys" } })
  t.eq(prompt.template("plain"):messages(), { { role = "user", content = "plain" } })
end)

t.test("unknown roles are a compile error", function()
  t.raises(function() prompt.template('\n{{ role "wizard" }}') end, '^template:2: unknown role "wizard"')
end)

t.test("a variable called role still works", function()
  t.eq(render("{{ role }}", { role = "admin" }), "admin")
end)

-- A template of text, outputs and role markers only gets messages() made directly (one
-- concat per message); the others split the rendered pieces. Both must agree.

t.test("messages trims around outputs at either end of a message", function()
  local tpl = prompt.template('{{ role "user" }}\n{{ x }} and {{ y }}\n{{ role "assistant" }}\n  {{ y }}!\n')
  t.eq(tpl:messages { x = "  X", y = "Y \n" }, {
    { role = "user", content = "X and Y" },
    { role = "assistant", content = "Y \n!" },
  })
end)

t.test("messages: blank marker sections stay as empty messages, blank text before the first goes", function()
  local tpl = prompt.template('{{ pre }}\n  \n{{ role "system" }}\n \n{{ role "user" }}\n{{ blank }}\n{{ role "assistant" }}\n{{ n }}')
  t.eq(tpl:messages { pre = " ", blank = "\t", n = 0 }, {
    { role = "system", content = "" },
    { role = "user", content = "" },
    { role = "assistant", content = "0" },
  })
  t.eq(tpl:messages { pre = " hi " }, {
    { role = "user", content = "hi" },
    { role = "system", content = "" },
    { role = "user", content = "" },
    { role = "assistant", content = "" },
  })
end)

t.test("messages splits at markers inside loops and conditions", function()
  local tpl = prompt.template('{{ role "system" }}\nsys\n{% for q in qs %}{{ role "user" }}\n{{ q }}\n'
    .. '{% if loop.last %}{{ role "assistant" }}\nlast\n{% endif %}{% endfor %}')
  t.eq(tpl:messages { qs = { " a ", "b" } }, {
    { role = "system", content = "sys" },
    { role = "user", content = "a" },
    { role = "user", content = "b" },
    { role = "assistant", content = "last" },
  })
end)

t.test("messages and render see the same text", function()
  local src = 'intro {{ a }}\n{{ role "user" }}\n{{ a | upper }} {{ b }}\n{{ role "assistant" }}\n{{ c }}\n'
  local vars = { a = "x", b = { k = 1 }, c = 2.0 }
  local tpl = prompt.template(src)
  t.eq(tpl(vars), "intro x\nX {\"k\":1}\n2\n")
  t.eq(tpl:messages(vars), {
    { role = "user", content = "intro x" },
    { role = "user", content = 'X {"k":1}' },
    { role = "assistant", content = "2" },
  })
end)

t.test("messages in strict mode names the undefined variable; the next render works", function()
  local tpl = prompt.template('{{ role "system" }}\nok\n{{ role "user" }}\n{{ who }}', { strict = true })
  t.raises(function() tpl:messages {} end, "^template:4: undefined variable 'who'$")
  t.raises(function() tpl {} end, "^template:4: undefined variable 'who'$")
  t.eq(tpl:messages { who = "Ada" }, { { role = "system", content = "ok" }, { role = "user", content = "Ada" } })
  t.eq(tpl { who = "Ada" }, "ok\nAda")
end)

t.test("a filter may render templates, the same one included, while rendering", function()
  local inner = prompt.template('{{ role "user" }}\n[{{ v }}]')
  local outer
  outer = prompt.template('{{ role "user" }}\n{{ v | wrap }}', { filters = {
    wrap = function(v)
      if #v > 3 then return v end
      return inner:messages({ v = v })[1].content .. outer { v = v .. v }
    end,
  } })
  t.eq(outer:messages { v = "ab" }, { { role = "user", content = "[ab]abab" } })
end)

t.test("messages of a prompt file follow the file when it changes", function()
  write("msgs.prompt", '{{ role "system" }}\nv1\n{{ role "user" }}\n{{ q }}\n')
  local tpl = prompt.file("msgs.prompt")
  local before = compiles()
  t.eq(tpl:messages { q = "a" }, { { role = "system", content = "v1" }, { role = "user", content = "a" } })
  t.eq(tpl:messages { q = "b" }, { { role = "system", content = "v1" }, { role = "user", content = "b" } })
  t.eq(compiles() - before, 1)
  write("msgs.prompt", '{{ role "system" }}\nv2 {% if q %}with q{% endif %}\n{{ role "user" }}\n{{ q }}\n')
  t.eq(tpl:messages { q = "c" }, { { role = "system", content = "v2 with q" }, { role = "user", content = "c" } })
  write("msgs.prompt", '{{ role "system" }}\nv3\n')
  t.eq(tpl:messages { q = "d" }, { { role = "system", content = "v3" } })
  t.eq(compiles() - before, 3)
end)

-- files, includes, hot reload ---------------------------------------------------------

t.test("prompt.file renders through luagent.source", function()
  write("agents/calc/next_step.prompt", "Next step for {{ who }}")
  t.eq(prompt.file("agents/calc/next_step.prompt") { who = "Ada" }, "Next step for Ada")
end)

t.test("prompt.file recompiles only when the version changes (hot reload)", function()
  write("reload.prompt", "v1 {{ x }}")
  local tpl = prompt.file("reload.prompt")
  local before = compiles()
  t.eq(tpl { x = 1 }, "v1 1")
  t.eq(tpl { x = 2 }, "v1 2")
  t.eq(tpl { x = 3 }, "v1 3")
  t.eq(compiles() - before, 1, "three renders of one version compile once")
  write("reload.prompt", "v2 {{ x }}")
  t.eq(tpl { x = 4 }, "v2 4")
  t.eq(compiles() - before, 2, "a new version compiles again")
  local reads_before = reads
  tpl { x = 5 }
  t.eq(reads - reads_before, 1, "each render asks the loader for the version once")
end)

t.test("two prompt.file objects for one path share the compiled template", function()
  write("shared.prompt", "shared")
  prompt.file("shared.prompt")()
  local before = compiles()
  t.eq(prompt.file("shared.prompt")(), "shared")
  t.eq(compiles() - before, 0)
end)

t.test("prompt.template compiles once however often it renders", function()
  local before = compiles()
  local tpl = prompt.template("{% for i in l %}{{ i }}{% endfor %}")
  for _ = 1, 100 do tpl { l = { 1, 2 } } end
  t.eq(compiles() - before, 1)
end)

t.test("includes resolve relative to the including file and see loop variables", function()
  write("agents/calc/main.prompt", "{% for item in items %}{% include \"parts/item.prompt\" %}{% endfor %}")
  write("agents/calc/parts/item.prompt", "{{ loop.index }}:{{ item }}:{{ suffix }}{% include \"../sep.prompt\" %}")
  write("agents/calc/sep.prompt", ";")
  t.eq(prompt.file("agents/calc/main.prompt") { items = { "a", "b" }, suffix = "!" }, "1:a:!;2:b:!;")
end)

t.test("an included file reloads when it changes", function()
  write("inc/outer.prompt", "[{% include 'inner.prompt' %}]")
  write("inc/inner.prompt", "one")
  local tpl = prompt.file("inc/outer.prompt")
  t.eq(tpl(), "[one]")
  write("inc/inner.prompt", "two")
  t.eq(tpl(), "[two]")
end)

t.test("circular includes are an error naming the cycle", function()
  write("cyc/a.prompt", "A{% include 'b.prompt' %}")
  write("cyc/b.prompt", "B\n{% include './a.prompt' %}")
  t.raises(function() prompt.file("cyc/a.prompt")() end,
    "^cyc/b.prompt:2: circular include: cyc/a.prompt %-> cyc/b.prompt %-> cyc/a.prompt$")
  write("cyc/self.prompt", "{% include 'self.prompt' %}")
  t.raises(function() prompt.file("cyc/self.prompt")() end, "circular include: cyc/self.prompt %-> cyc/self.prompt")
end)

t.test("include of a missing file and syntax errors in included files name the file", function()
  write("miss/main.prompt", "{% include 'gone.prompt' %}")
  t.raises(function() prompt.file("miss/main.prompt")() end, "^miss/gone.prompt: cannot read prompt file: no such file")
  write("bad/main.prompt", "ok {% include 'broken.prompt' %}")
  write("bad/broken.prompt", "line 1\n{% if %}")
  t.raises(function() prompt.file("bad/main.prompt")() end, "^bad/broken.prompt:2: expected a value")
end)

t.test("role markers inside included files split messages too", function()
  write("chat/main.prompt", "{% include 'system.prompt' %}{{ role \"user\" }}\n{{ q }}")
  write("chat/system.prompt", "{{ role \"system\" }}\nBe brief.\n")
  t.eq(prompt.file("chat/main.prompt"):messages { q = "hi" },
    { { role = "system", content = "Be brief." }, { role = "user", content = "hi" } })
end)

t.test("set_loader replaces the loader and clears the cache", function()
  local calls = 0
  prompt.set_loader(function(path)
    calls = calls + 1
    return "custom " .. path, 1
  end)
  t.eq(prompt.file("x.prompt")(), "custom x.prompt")
  t.eq(calls, 1)
  t.raises(function() prompt.set_loader("nope") end, "expected a function")
end)

t.test("path joining folds . and .. segments", function()
  t.eq(prompt._join_path("a/b", "../c/./d.prompt"), "a/c/d.prompt")
  t.eq(prompt._join_path("", "x.prompt"), "x.prompt")
  t.eq(prompt._join_path("/abs/dir", "x.prompt"), "/abs/dir/x.prompt")
  t.eq(prompt._join_path("a", "/root.prompt"), "/root.prompt")
end)

t.test("errors are tables with a code, as the host's modules raise them", function()
  prompt.set_loader(fake_source.read) -- the test before put in its own
  local function caught(fn)
    local ok, err = pcall(fn)
    t.eq(ok, false)
    t.eq(type(err), "table")
    return err
  end
  local syntax = caught(function() prompt.template("a\n{% frobnicate %}") end)
  t.eq(syntax.code, "syntax")
  t.eq(syntax.message, "template:2: unknown tag 'frobnicate'")
  t.eq(syntax.source, "template")
  t.eq(syntax.line, 2)
  t.eq(tostring(syntax), "template:2: unknown tag 'frobnicate' [syntax]")
  t.eq(caught(function() prompt.template("{{ x }}", { strict = true }) {} end).code, "usage")
  t.eq(caught(function() prompt.template(42) end).code, "usage")
  t.eq(caught(function() prompt.template("x", 5) end).code, "usage")
  local missing = caught(function() prompt.file("nowhere/x.prompt")() end)
  t.eq(missing.code, "not_found")
  t.eq(missing.message, "nowhere/x.prompt: cannot read prompt file: no such file: nowhere/x.prompt")
  write("miss2/main.prompt", "{% include 'gone.prompt' %}")
  t.eq(caught(function() prompt.file("miss2/main.prompt")() end).code, "not_found")
  -- A dot for the colon said "attempt to call a nil value (method '_run')".
  local template = prompt.template("hi")
  for _, method in ipairs { "render", "messages" } do
    local dotted = caught(function() template[method]({}) end)
    t.eq(dotted.code, "usage")
    t.eq(dotted.message, "template:" .. method .. ": call it with a colon (template:" .. method ..
      "(vars)), got a table for the template")
  end
end)

t.test("prompt.file refuses a path outside the agent's folder when called", function()
  local reads_before = reads
  for _, path in ipairs { "../x.prompt", "..", "a/../../x.prompt", "/etc/passwd" } do
    local ok, err = pcall(prompt.file, path)
    t.eq(ok, false)
    t.eq(err.code, "forbidden")
    t.eq(err.message, "prompt.file: '" .. path .. "' is outside the agent's folder")
  end
  t.eq(reads, reads_before) -- refused before anything was read
  write("ok/..name.prompt", "fine")
  t.eq(prompt.file("ok/..name.prompt")(), "fine") -- a name that starts with "..", not a step up
end)

t.run()
