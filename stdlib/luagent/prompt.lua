--- luagent.prompt — prompt templates (factor 2: own your prompts).
---
--- Templates are compiled once into a Lua function (generated source made only
--- of our own constructs; every user string is emitted as an escaped literal)
--- and cached; rendering runs that function. Syntax (see docs/prompts.md):
---
---   {{ expr }}                     output; expr = path [| filter ...]
---       paths: name, user.name, items[1], map["key"]
---       filters: upper, lower, trim, json, length, default("x"[, true]),
---                join(", "), plus opts.filters
---   {% for x in list %}...{% endfor %}          loop.index, loop.index0,
---   {% for k, v in map %}...{% endfor %}         loop.first, loop.last, loop.length
---                                                (maps iterate in sorted key order)
---   {% if e %}...{% elif e %}...{% else %}...{% endif %}
---       e: not, and, or, ==, ~= (or !=), <, <=, >, >=, literals
---       ("str", 'str', 12, 1.5, true, false, nil), parentheses
---   {# comment #}
---   {{- / -}} / {%- / -%} / {#- / -#}   strip whitespace before / after the tag
---   {% include "other.prompt" %}   relative to the including file, via the loader
---   {{ role "system" }}            on its own line: starts a chat message
---                                  (system, user, assistant, tool); the line is
---                                  removed from the output; tpl:messages(vars)
---                                  splits the rendered text at these markers.
---
--- Truthiness: nil, false, "" and an empty table are false; everything else
--- (including 0) is true. Undefined variables render as "" unless opts.strict.

local prompt = {}

local MAX_NESTING = 50 -- block and expression nesting; keeps generated code within Lua's limits
local MAX_INCLUDE_DEPTH = 16
local ROLES = { system = true, user = true, assistant = true, tool = true }

local fmt = string.format

-- Errors reach scripts as the host's modules raise them (bindings/lua_guard.cpp): a table
-- { code =, message =, source =, line = } whose tostring is "message [code]", so a script
-- reads err.code whichever module failed. Template errors keep the "name:line: " start in
-- their message, as before, and carry the same as source and line.
-- This module's metatables are shared by every run in the host: each has __metatable, so
-- no script reaches one to give every run's objects its own __gc, __tostring or render.
local ERROR_META = {
  __name = "luagent.error",
  __metatable = "luagent.error",
  __tostring = function(e) return tostring(e.message) .. " [" .. tostring(e.code) .. "]" end,
}

local function raise(code, message, source, line)
  error(setmetatable({ code = code, message = message, source = source, line = line }, ERROR_META), 0)
end
---For luagent.context, not agents: raises a luagent error table (the stdlib raises one shape).
---@private
---@param code string an error code from docs/errors.md
---@param message string
---@param source? string
---@param line? integer
prompt._raise = raise

-- A template that does not compile: code "syntax", as for a script (docs/errors.md).
local function syntax_error(name, line, what)
  raise("syntax", fmt("%s:%d: %s", name, line, what), name, line)
end

-- A render the variables (or the includes) make impossible: code "usage".
local function render_error(name, line, what)
  raise("usage", fmt("%s:%d: %s", name, line, what), name, line)
end

---@class luagent.prompt.Options
---@field strict? boolean undefined variables in output are an error naming the variable and line
---@field name? string name used in error messages and to resolve includes (default "template")
---@field filters? table<string, fun(value: any, ...: any): any> extra filters, by name
---@field default_role? string role of text before the first role marker (default "user")

---@class luagent.prompt.Message
---@field role string
---@field content string

---@class luagent.prompt.Template
---@field name string
---@operator call(table?): string
local Template = {}
Template.__index = Template
Template.__metatable = "luagent.prompt.template"

----------------------------------------------------------------------------
-- value helpers shared by the generated code (the table `H`)
----------------------------------------------------------------------------

local H = {}

local json_encode -- resolved lazily: luagent.json when present, else the fallback below

local function format_number(n)
  if math.type(n) == "integer" then return tostring(n) end
  if n ~= n then return "NaN" end
  if n == math.huge then return "Infinity" end
  if n == -math.huge then return "-Infinity" end
  if n == math.floor(n) and n > -2 ^ 53 and n < 2 ^ 53 then return fmt("%d", n) end
  for _, p in ipairs { "%.15g", "%.16g", "%.17g" } do
    local s = fmt(p, n)
    if tonumber(s) == n then return s end
  end
  return fmt("%.17g", n)
end
H.format_number = format_number

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta == "number" end -- numbers before strings
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end
H.sorted_keys = sorted_keys

local JSON_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function fallback_json(value)
  local out, seen = {}, {}
  local function enc(v, depth)
    if depth > 100 then raise("usage", "json: nesting deeper than 100") end
    local tv = type(v)
    if v == nil then
      out[#out + 1] = "null"
    elseif tv == "boolean" then
      out[#out + 1] = tostring(v)
    elseif tv == "number" then
      if v ~= v or v == math.huge or v == -math.huge then raise("usage", "json: cannot encode " .. tostring(v)) end
      out[#out + 1] = format_number(v)
    elseif tv == "string" then
      out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
        return JSON_ESCAPES[c] or fmt("\\u%04x", c:byte())
      end) .. '"'
    elseif tv == "table" then
      if seen[v] then raise("usage", "json: cannot encode a table that contains itself") end
      seen[v] = true
      local n = #v
      if n > 0 or next(v) == nil then
        out[#out + 1] = next(v) == nil and "{}" or "["
        if n > 0 then
          for i = 1, n do
            if i > 1 then out[#out + 1] = "," end
            enc(v[i], depth + 1)
          end
          out[#out + 1] = "]"
        end
      else
        out[#out + 1] = "{"
        for i, k in ipairs(sorted_keys(v)) do
          if i > 1 then out[#out + 1] = "," end
          enc(tostring(k), depth + 1)
          out[#out + 1] = ":"
          enc(v[k], depth + 1)
        end
        out[#out + 1] = "}"
      end
      seen[v] = nil
    else
      raise("usage", "json: cannot encode a " .. tv)
    end
  end
  enc(value, 0)
  return table.concat(out)
end

---Encodes a value as JSON: luagent.json when the host provides it, else a small fallback
---(sorted object keys, empty table as `{}`).
---@param value any
---@return string
function prompt.json(value)
  if not json_encode then
    local ok, mod = pcall(require, "luagent.json")
    json_encode = ok and type(mod) == "table" and mod.encode or fallback_json
  end
  return json_encode(value)
end

---Strips leading and trailing whitespace (what Lua's `%s` matches: space, \t, \n, \v, \f, \r).
---The usual idiom, `s:match("^%s*(.-)%s*$")`, retries its tail at every character: tens
---of microseconds on a prompt-sized string, on every step. This scans each end once.
---@param s string
---@return string
function prompt.trim(s)
  local first = string.find(s, "%S")
  if not first then return "" end
  local n = #s
  local last = n
  local b = string.byte(s, last)
  while b == 32 or (b >= 9 and b <= 13) do
    last = last - 1
    b = string.byte(s, last)
  end
  if first == 1 and last == n then return s end -- nothing to cut: no copy
  return string.sub(s, first, last)
end

--- Converts any value to the text a template outputs.
function H.str(v)
  local tv = type(v)
  if tv == "string" then return v end
  if v == nil then return "" end
  if tv == "number" then return format_number(v) end
  if tv == "boolean" then return tostring(v) end
  if tv == "table" then return prompt.json(v) end
  return tostring(v)
end

H.trim = prompt.trim

function H.truthy(v)
  if v == nil or v == false or v == "" then return false end
  if type(v) == "table" and next(v) == nil then return false end
  return true
end

function H.idx(base, key)
  local tb = type(base)
  if tb == "table" then return base[key] end
  if tb == "userdata" then return base[key] end
  return nil
end

function H.need(v, what, name, line)
  if v == nil then render_error(name, line, fmt("undefined variable '%s'", what)) end
  return v
end

function H.OR(a, b) if H.truthy(a) then return a end return b end
function H.AND(a, b) if H.truthy(a) then return b end return a end
function H.eq(a, b) return a == b end

function H.cmp(a, b, op, name, line)
  local ta, tb = type(a), type(b)
  if ta ~= tb or (ta ~= "number" and ta ~= "string") then
    render_error(name, line, fmt("cannot compare %s with %s using '%s'", ta, tb, op))
  end
  if op == "<" then return a < b elseif op == "<=" then return a <= b
  elseif op == ">" then return a > b else return a >= b end
end

--- Returns values (and keys for two-variable loops) to iterate, and their count.
function H.iter(seq, two, what, strict, name, line)
  if seq == nil then
    if strict then render_error(name, line, fmt("undefined variable '%s'", what)) end
    return {}, nil, 0
  end
  if type(seq) ~= "table" then
    render_error(name, line, fmt("cannot loop over a %s ('%s')", type(seq), what))
  end
  local n = #seq
  if two then
    local keys = sorted_keys(seq)
    local values = {}
    for i, k in ipairs(keys) do values[i] = seq[k] end
    return values, keys, #keys
  end
  if n == 0 and next(seq) ~= nil then -- a map looped with one variable: its sorted keys
    local keys = sorted_keys(seq)
    return keys, nil, #keys
  end
  return seq, nil, n
end

function H.with(vars, locals)
  return setmetatable(locals, { __index = vars })
end

H.F = {} -- built-in filters: fn(value, ...args)

function H.F.upper(v) return string.upper(H.str(v)) end
function H.F.lower(v) return string.lower(H.str(v)) end
function H.F.trim(v) return prompt.trim(H.str(v)) end
function H.F.json(v) return prompt.json(v) end
function H.F.default(v, d, falsy)
  if v == nil or (falsy and not H.truthy(v)) then return d end
  return v
end
function H.F.join(v, sep)
  if type(v) ~= "table" then return H.str(v) end
  local parts = {}
  for i = 1, #v do parts[i] = H.str(v[i]) end
  return table.concat(parts, sep == nil and "" or H.str(sep))
end
function H.F.length(v)
  if type(v) == "string" then return utf8.len(v) or #v end
  if type(v) == "table" then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    return n
  end
  return 0
end

----------------------------------------------------------------------------
-- lexer: template text -> chunks (text, output, tag)
----------------------------------------------------------------------------

local function count_newlines(s)
  local _, n = s:gsub("\n", "")
  return n
end

-- Finds the closing delimiter `close` from position i, skipping quoted strings.
local function find_close(src, i, close)
  local n = #src
  while i <= n do
    local c = src:sub(i, i)
    if c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then j = j + 1
        elseif d == c then break
        elseif d == "\n" then return nil end
        j = j + 1
      end
      i = j + 1
    elseif src:sub(i, i + 1) == close then
      return i
    else
      i = i + 1
    end
  end
  return nil
end

local function lex(src, name)
  local chunks = {}
  local pos, line, n = 1, 1, #src
  while pos <= n do
    local s = src:find("{[{%%#]", pos)
    if not s then
      chunks[#chunks + 1] = { kind = "text", text = src:sub(pos), line = line }
      break
    end
    if s > pos then
      local text = src:sub(pos, s - 1)
      chunks[#chunks + 1] = { kind = "text", text = text, line = line }
      line = line + count_newlines(text)
    end
    local open = src:sub(s + 1, s + 1)
    local close = open == "{" and "}}" or (open == "%" and "%}" or "#}")
    local i = s + 2
    local strip_before = src:sub(i, i) == "-"
    if strip_before then i = i + 1 end
    local j = open == "#" and src:find("#}", i, true) or find_close(src, i, close)
    if not j then
      syntax_error(name, line, fmt("'{%s' is never closed with '%s'", open, close))
    end
    local body_end = j - 1
    local strip_after = body_end >= i and src:sub(body_end, body_end) == "-"
    if strip_after then body_end = body_end - 1 end
    chunks[#chunks + 1] = {
      kind = open == "{" and "output" or (open == "%" and "tag" or "comment"),
      body = src:sub(i, body_end), line = line,
      strip_before = strip_before, strip_after = strip_after,
    }
    line = line + count_newlines(src:sub(s, j + 1))
    pos = j + 2
  end
  return chunks
end

----------------------------------------------------------------------------
-- expression parser: text -> AST
----------------------------------------------------------------------------

local KEYWORDS = { ["and"] = true, ["or"] = true, ["not"] = true, ["true"] = true,
  ["false"] = true, ["nil"] = true, ["in"] = true }

local STRING_ESCAPES = { n = "\n", t = "\t", r = "\r", ["\\"] = "\\", ['"'] = '"', ["'"] = "'" }

local function tokenize(text, name, line)
  local toks, i, n = {}, 1, #text
  local function fail(what) syntax_error(name, line, what) end
  while i <= n do
    local c = text:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c:match("[%a_]") then
      local word = text:match("^[%w_]+", i)
      toks[#toks + 1] = { t = KEYWORDS[word] and word or "name", v = word }
      i = i + #word
    elseif c:match("%d") or (c == "-" and text:match("^%-%d", i)) then
      local num = text:match("^%-?%d+%.?%d*", i)
      toks[#toks + 1] = { t = "literal", v = tonumber(num) }
      i = i + #num
    elseif c == '"' or c == "'" then
      local parts, j = {}, i + 1
      while true do
        local d = text:sub(j, j)
        if d == "" then fail("unterminated string") end
        if d == c then break end
        if d == "\\" then
          local e = text:sub(j + 1, j + 1)
          if not STRING_ESCAPES[e] then fail("unknown escape '\\" .. e .. "' in string") end
          parts[#parts + 1] = STRING_ESCAPES[e]
          j = j + 2
        else
          parts[#parts + 1] = d
          j = j + 1
        end
      end
      toks[#toks + 1] = { t = "literal", v = table.concat(parts), str = true }
      i = j + 1
    else
      local op = text:match("^[=~!<>]=", i) or text:match("^[<>|%.%[%]%(%),]", i)
      if not op then fail("unexpected character '" .. c .. "'") end
      toks[#toks + 1] = { t = op == "!=" and "~=" or op }
      i = i + #op
    end
  end
  toks[#toks + 1] = { t = "eof" }
  return toks
end

local Parser = {}
Parser.__index = Parser

local function new_parser(text, name, line)
  return setmetatable({ toks = tokenize(text, name, line), pos = 1, name = name, line = line,
    depth = 0 }, Parser)
end

function Parser:peek(k) return self.toks[self.pos + (k or 0)] end
function Parser:fail(what) syntax_error(self.name, self.line, what) end

function Parser:next()
  local tok = self.toks[self.pos]
  self.pos = self.pos + 1
  return tok
end

local function describe(tok)
  if tok.t == "eof" then return "end of expression" end
  if tok.t == "name" then return "'" .. tok.v .. "'" end
  if tok.t == "literal" then return tok.str and fmt("%q", tok.v) or tostring(tok.v) end
  return "'" .. tok.t .. "'"
end

function Parser:expect(t)
  local tok = self:next()
  if tok.t ~= t then self:fail(fmt("expected '%s', found %s", t, describe(tok))) end
  return tok
end

function Parser:enter()
  self.depth = self.depth + 1
  if self.depth > MAX_NESTING then self:fail("expression nested deeper than " .. MAX_NESTING) end
end

function Parser:expr()
  self:enter()
  local left = self:and_expr()
  while self:peek().t == "or" do
    self:next()
    left = { t = "or", left, self:and_expr() }
  end
  self.depth = self.depth - 1
  return left
end

function Parser:and_expr()
  local left = self:not_expr()
  while self:peek().t == "and" do
    self:next()
    left = { t = "and", left, self:not_expr() }
  end
  return left
end

function Parser:not_expr()
  if self:peek().t == "not" then
    self:next()
    self:enter()
    local e = { t = "not", self:not_expr() }
    self.depth = self.depth - 1
    return e
  end
  return self:comparison()
end

local COMPARISONS = { ["=="] = true, ["~="] = true, ["<"] = true, ["<="] = true, [">"] = true, [">="] = true }

function Parser:comparison()
  local left = self:filtered()
  local op = self:peek().t
  if COMPARISONS[op] then
    self:next()
    left = { t = "cmp", op = op, left, self:filtered() }
  end
  return left
end

function Parser:filtered()
  local e = self:primary()
  while self:peek().t == "|" do
    self:next()
    local fname = self:expect("name").v
    local args = {}
    if self:peek().t == "(" then
      self:next()
      if self:peek().t ~= ")" then
        repeat
          args[#args + 1] = self:expr()
        until self:peek().t ~= "," or not self:next()
      end
      self:expect(")")
    end
    e = { t = "filter", name = fname, arg = e, args = args }
  end
  return e
end

function Parser:primary()
  local tok = self:next()
  if tok.t == "literal" then return { t = "literal", v = tok.v } end
  if tok.t == "true" then return { t = "literal", v = true } end
  if tok.t == "false" then return { t = "literal", v = false } end
  if tok.t == "nil" then return { t = "literal", v = nil } end
  if tok.t == "(" then
    local e = self:expr()
    self:expect(")")
    return e
  end
  if tok.t ~= "name" then self:fail("expected a value, found " .. describe(tok)) end
  local path = { t = "path", root = tok.v, steps = {}, text = tok.v }
  while true do
    local p = self:peek().t
    if p == "." then
      self:next()
      local key = self:expect("name").v
      path.steps[#path.steps + 1] = { t = "literal", v = key }
      path.text = path.text .. "." .. key
    elseif p == "[" then
      self:next()
      local start = self.pos
      local key = self:expr()
      local k = self.toks[start]
      self:expect("]")
      path.steps[#path.steps + 1] = key
      path.text = path.text .. "[" .. (key.t == "literal" and (k.str and fmt("%q", key.v) or tostring(key.v))
        or "...") .. "]"
    else
      break
    end
  end
  return path
end

function Parser:finish()
  local tok = self:peek()
  if tok.t ~= "eof" then self:fail("unexpected " .. describe(tok)) end
end

----------------------------------------------------------------------------
-- statement parser: chunks -> tree
----------------------------------------------------------------------------

-- Parses one {% tag %} body into a statement.
local function parse_tag(chunk, name)
  local p = new_parser(chunk.body, name, chunk.line)
  local kw = p:next()
  local word = kw.t == "name" and kw.v or kw.t
  local st = { line = chunk.line }
  if word == "for" then
    st.t = "for"
    st.vars = { p:expect("name").v }
    if p:peek().t == "," then
      p:next()
      st.vars[2] = p:expect("name").v
    end
    p:expect("in")
    st.iter = p:expr()
  elseif word == "if" or word == "elif" then
    st.t = word
    st.cond = p:expr()
  elseif word == "include" then
    st.t = "include"
    local tok = p:next()
    if tok.t ~= "literal" or not tok.str then p:fail("include needs a quoted file name") end
    st.path = tok.v
  elseif word == "else" or word == "endif" or word == "endfor" then
    st.t = word
  else
    p:fail("unknown tag " .. describe(kw))
  end
  p:finish()
  return st
end

local function parse_output(chunk, name)
  local p = new_parser(chunk.body, name, chunk.line)
  local first, second = p:peek(0), p:peek(1)
  if first.t == "name" and first.v == "role" and second.t == "literal" and second.str then
    p:next(); p:next()
    p:finish()
    if not ROLES[second.v] then
      p:fail(fmt("unknown role %q (use system, user, assistant or tool)", second.v))
    end
    return { t = "role", role = second.v, line = chunk.line }
  end
  local e = p:expr()
  p:finish()
  return { t = "output", expr = e, line = chunk.line }
end

-- Applies whitespace control and turns chunks into a flat statement list.
local function to_statements(chunks, name)
  local list = {}
  for _, c in ipairs(chunks) do
    if c.kind == "text" then
      list[#list + 1] = { t = "text", text = c.text }
    else
      local st
      if c.kind == "tag" then st = parse_tag(c, name)
      elseif c.kind == "output" then st = parse_output(c, name)
      else st = { t = "comment" } end
      st.strip_before, st.strip_after = c.strip_before, c.strip_after
      list[#list + 1] = st
    end
  end
  for i, st in ipairs(list) do
    local prev, nxt = list[i - 1], list[i + 1]
    if st.t == "role" then
      -- A role marker owns its whole line: drop the indentation before it and the newline after it.
      if prev and prev.t == "text" then
        local head = prev.text:match("^(.*\n)[ \t]*$") or (i == 2 and prev.text:match("^[ \t]*$") and "")
        if head then prev.text = head end
      end
      if nxt and nxt.t == "text" then
        nxt.text = nxt.text:gsub("^[ \t]*\r?\n", "", 1)
      end
    end
    if st.strip_before and prev and prev.t == "text" then prev.text = prev.text:gsub("%s+$", "") end
    if st.strip_after and nxt and nxt.t == "text" then nxt.text = nxt.text:gsub("^%s+", "") end
  end
  return list
end

-- Nests for/if blocks; returns the top-level node list.
local function build_tree(list, name)
  local root = { body = {} }
  local stack = { root }
  local function top() return stack[#stack] end
  local function fail(line, what) syntax_error(name, line, what) end
  for _, st in ipairs(list) do
    local t = st.t
    if t == "text" then
      if st.text ~= "" then table.insert(top().body, st) end
    elseif t == "output" or t == "role" or t == "include" then
      table.insert(top().body, st)
    elseif t == "for" then
      st.body = {}
      table.insert(top().body, st)
      stack[#stack + 1] = st
    elseif t == "if" then
      st.branches = { { cond = st.cond, body = {} } }
      st.body = st.branches[1].body
      table.insert(top().body, st)
      stack[#stack + 1] = st
    elseif t == "elif" or t == "else" then
      local block = top()
      if block.t ~= "if" then fail(st.line, "'" .. t .. "' without a matching 'if'") end
      if block.else_body then fail(st.line, "'" .. t .. "' after 'else'") end
      if t == "elif" then
        local branch = { cond = st.cond, body = {} }
        block.branches[#block.branches + 1] = branch
        block.body = branch.body
      else
        block.else_body = {}
        block.body = block.else_body
      end
    elseif t == "endif" or t == "endfor" then
      local block = top()
      local want = t == "endif" and "if" or "for"
      if block.t ~= want then
        fail(st.line, "'" .. t .. "' without a matching '" .. want .. "'"
          .. (block.t and (" (the open block is '" .. block.t .. "' from line " .. block.line .. ")") or ""))
      end
      stack[#stack] = nil
    end
    if #stack > MAX_NESTING then fail(st.line, "blocks nested deeper than " .. MAX_NESTING) end
  end
  if #stack > 1 then
    local open = top()
    fail(open.line, "'" .. open.t .. "' is never closed with 'end" .. open.t .. "'")
  end
  return root.body
end

----------------------------------------------------------------------------
-- code generator: tree -> Lua source
----------------------------------------------------------------------------

local function lit(v)
  if v == nil then return "nil" end
  if type(v) == "boolean" then return tostring(v) end
  if type(v) == "number" then
    if v ~= v then return "(0/0)" end
    return fmt("%q", v)
  end
  return fmt("%q", v) -- string: %q escapes quotes, backslashes, newlines and control bytes
end

local Gen = {}
Gen.__index = Gen

function Gen:emit(line) self.code[#self.code + 1] = line end

function Gen:new_local()
  self.counter = self.counter + 1
  return "L" .. self.counter
end

-- Resolves a template variable to a Lua local if a loop declared it.
function Gen:lookup(nm)
  for i = #self.scopes, 1, -1 do
    local l = self.scopes[i][nm]
    if l then return l end
  end
  return nil
end

-- strict: whether an undefined value here is an error (only in opts.strict mode).
function Gen:expr(e, line, strict)
  local t = e.t
  if t == "literal" then return lit(e.v) end
  if t == "path" then
    local code = self:lookup(e.root) or ("V[" .. lit(e.root) .. "]")
    for _, step in ipairs(e.steps) do
      code = "H.idx(" .. code .. "," .. self:expr(step, line, false) .. ")"
    end
    if strict and self.strict then
      code = fmt("H.need(%s,%s,NAME,%d)", code, lit(e.text), line)
    end
    return code
  end
  if t == "or" then return fmt("H.OR(%s,%s)", self:expr(e[1], line, false), self:expr(e[2], line, strict)) end
  if t == "and" then return fmt("H.AND(%s,%s)", self:expr(e[1], line, false), self:expr(e[2], line, strict)) end
  if t == "not" then return fmt("(not H.truthy(%s))", self:expr(e[1], line, false)) end
  if t == "cmp" then
    local a, b = self:expr(e[1], line, false), self:expr(e[2], line, false)
    if e.op == "==" then return fmt("(%s==%s)", a, b) end
    if e.op == "~=" then return fmt("(%s~=%s)", a, b) end
    return fmt("H.cmp(%s,%s,%s,NAME,%d)", a, b, lit(e.op), line)
  end
  if t == "filter" then
    local fn
    if self.filters and self.filters[e.name] then
      fn = "UF[" .. lit(e.name) .. "]"
    elseif H.F[e.name] then
      fn = "H.F[" .. lit(e.name) .. "]"
    else
      syntax_error(self.name, line, fmt("unknown filter '%s'", e.name))
    end
    local args = { self:expr(e.arg, line, strict and e.name ~= "default") }
    for _, a in ipairs(e.args) do args[#args + 1] = self:expr(a, line, false) end
    return fn .. "(" .. table.concat(args, ",") .. ")"
  end
  raise("internal", "internal: unknown expression " .. tostring(t))
end

-- Variables visible to an included template: the caller's plus its loop variables.
function Gen:include_vars()
  local fields = {}
  for _, scope in ipairs(self.scopes) do
    for nm, l in pairs(scope) do fields[#fields + 1] = "[" .. lit(nm) .. "]=" .. l end
  end
  if #fields == 0 then return "V" end
  table.sort(fields)
  return "H.with(V,{" .. table.concat(fields, ",") .. "})"
end

function Gen:block(nodes)
  for _, node in ipairs(nodes) do
    local t = node.t
    if t == "text" then
      self:emit("n=n+1 o[n]=" .. lit(node.text))
    elseif t == "output" then
      self:emit("n=n+1 o[n]=H.str(" .. self:expr(node.expr, node.line, true) .. ")")
    elseif t == "role" then
      self:emit(fmt("do local r=R.roles r[#r+1]=%s r[#r+1]=n+1 end", lit(node.role)))
    elseif t == "include" then
      self:emit(fmt("H.include(R,o,NAME,%s,%s,%d) n=#o", lit(node.path), self:include_vars(), node.line))
    elseif t == "if" then
      for i, br in ipairs(node.branches) do
        self:emit((i == 1 and "if " or "elseif ") .. "H.truthy(" .. self:expr(br.cond, node.line, false) .. ") then")
        self:block(br.body)
      end
      if node.else_body then
        self:emit("else")
        self:block(node.else_body)
      end
      self:emit("end")
    elseif t == "for" then
      local items, keys, len, i = self:new_local(), self:new_local(), self:new_local(), self:new_local()
      local iter_text = node.iter.text or "loop value"
      self:emit("do")
      self:emit(fmt("local %s,%s,%s=H.iter(%s,%s,%s,%s,NAME,%d)", items, keys, len,
        self:expr(node.iter, node.line, false), tostring(node.vars[2] ~= nil), lit(iter_text),
        tostring(self.strict), node.line))
      self:emit(fmt("for %s=1,%s do", i, len))
      local scope = {}
      local loopvar = self:new_local()
      scope.loop = loopvar
      self:emit(fmt("local %s={index=%s,index0=%s-1,first=%s==1,last=%s==%s,length=%s}",
        loopvar, i, i, i, i, len, len))
      if node.vars[2] then
        local k, v = self:new_local(), self:new_local()
        self:emit(fmt("local %s,%s=%s[%s],%s[%s]", k, v, keys, i, items, i))
        scope[node.vars[1]], scope[node.vars[2]] = k, v
      else
        local v = self:new_local()
        self:emit(fmt("local %s=%s[%s]", v, items, i))
        scope[node.vars[1]] = v
      end
      self.scopes[#self.scopes + 1] = scope
      self:block(node.body)
      self.scopes[#self.scopes] = nil
      self:emit("end")
      self:emit("end")
    end
  end
end

local MAX_SEGMENT_PIECES = 100 -- a segment's pieces are one concat: registers are limited

-- The Lua expression of a message's content in a simple template (see Gen:messages): the
-- trimmed concatenation of `nodes`, text and outputs. Trimming is done here when it can be:
-- blank text at either end goes, and text with something else at either end is cut now.
function Gen:segment(nodes)
  local first, last = 1, #nodes
  while first <= last and nodes[first].t == "text" and not nodes[first].text:find("%S") do first = first + 1 end
  while last >= first and nodes[last].t == "text" and not nodes[last].text:find("%S") do last = last - 1 end
  local all_text = true
  for i = first, last do all_text = all_text and nodes[i].t == "text" end
  if all_text then
    local texts = {}
    for i = first, last do texts[#texts + 1] = nodes[i].text end
    return lit(prompt.trim(table.concat(texts)))
  end
  local pieces = {}
  for i = first, last do
    local node = nodes[i]
    if node.t == "text" then
      local text = node.text
      if i == first then text = text:sub((text:find("%S"))) end
      if i == last then
        local cut = #text
        while text:find("^%s", cut) do cut = cut - 1 end
        text = text:sub(1, cut)
      end
      pieces[#pieces + 1] = lit(text)
    else
      pieces[#pieces + 1] = "H.str(" .. self:expr(node.expr, node.line, true) .. ")"
    end
  end
  local code = table.concat(pieces, "..")
  if nodes[first].t ~= "text" or nodes[last].t ~= "text" then code = "H.trim(" .. code .. ")" end
  return code
end

-- For a simple template (text, outputs and role markers only, which is what most chat
-- prompts are), emits messages(V, default_role): tpl:messages() made directly, each content
-- one concat, instead of pieces rendered into a table, joined, then trimmed (a copy each).
-- Returns false for other templates.
function Gen:messages(tree)
  local segments = { { nodes = {} } }
  for _, node in ipairs(tree) do
    if node.t == "role" then
      segments[#segments + 1] = { role = node.role, nodes = {} }
    elseif node.t == "text" or node.t == "output" then
      local nodes = segments[#segments].nodes
      if #nodes >= MAX_SEGMENT_PIECES then return false end
      nodes[#nodes + 1] = node
    else
      return false
    end
  end
  self:emit("local function messages(V,D)")
  self:emit("local m,k={nil,nil,nil,nil},0")
  for i, segment in ipairs(segments) do
    local content = self:segment(segment.nodes)
    if i > 1 then
      self:emit(fmt("k=k+1 m[k]={role=%s,content=%s}", lit(segment.role), content))
    elseif content ~= lit("") then -- text before the first marker: a message unless blank
      self:emit("do local c=" .. content .. " if c~=\"\" then k=k+1 m[k]={role=D,content=c} end end")
    end
  end
  self:emit("return m")
  self:emit("end")
  return true
end

-- Compiles template source to a render function fn(vars, out, render_state), and for a
-- simple template a messages function (see Gen:messages), else nil. fn appends the
-- output's pieces to `out` (n counts them, saving a length operator per piece) and each
-- role marker to render_state.roles as two entries, the role and the index of the piece
-- it starts at.
local function compile(source, name, opts)
  if type(source) ~= "string" then
    raise("usage", fmt("%s: template source must be a string, got %s", name, type(source)))
  end
  local tree = build_tree(to_statements(lex(source, name), name), name)
  local g = setmetatable({ code = {}, counter = 0, scopes = {}, name = name,
    strict = opts.strict and true or false, filters = opts.filters }, Gen)
  g:emit("local H,NAME,UF=...")
  g:emit("local function render(V,o,R)")
  g:emit("local n=#o")
  g:block(tree)
  g:emit("end")
  g:emit(g:messages(tree) and "return render,messages" or "return render")
  local src = table.concat(g.code, "\n")
  local chunk, err = load(src, "=" .. name, "t", {})
  if not chunk then raise("internal", fmt("%s: internal error compiling template: %s", name, err)) end
  prompt._compiles = prompt._compiles + 1
  return chunk(H, name, opts.filters)
end

prompt._compiles = 0

----------------------------------------------------------------------------
-- loader, file cache, includes
----------------------------------------------------------------------------

-- The module is shared by every run of the host, so a loader set with set_loader belongs to
-- the coroutine that set it (one agent's function must never read another's prompts), and
-- each loader has a cache of its own (what it read must never serve another loader).
local default_loader -- luagent.source.read, looked up on first use
local loaders = setmetatable({}, { __mode = "k" }) -- coroutine -> fn(path) -> text, version
local file_caches = setmetatable({}, { __mode = "k" }) -- loader -> its caches (file_cache_of)

---Replaces, for the calling run (its step; inside a coroutine the agent made, for that
---coroutine), the function that reads prompt files (default: `require("luagent.source").read`).
---@param fn fun(path: string): string, any returns the text and a version that changes with it
function prompt.set_loader(fn)
  assert(type(fn) == "function", "prompt.set_loader: expected a function")
  loaders[coroutine.running()] = fn
end

local function current_loader()
  local loader = loaders[coroutine.running()]
  if loader then return loader end
  if not default_loader then
    local ok, src = pcall(require, "luagent.source")
    if not ok or type(src) ~= "table" or type(src.read) ~= "function" then
      raise("config", "prompt: no file loader (luagent.source is unavailable; call prompt.set_loader)")
    end
    default_loader = src.read
  end
  return default_loader
end

local function read_file(loader, path)
  local ok, text, version = pcall(loader, path)
  if not ok then
    -- The loader's own code when it gives one (luagent.source: not_found, forbidden);
    -- a loader raising a plain string could not find the file.
    local code = type(text) == "table" and type(text.code) == "string" and text.code or "not_found"
    local why = type(text) == "table" and text.message or text
    raise(code, fmt("%s: cannot read prompt file: %s", path, tostring(why)))
  end
  if type(text) ~= "string" then raise("not_found", fmt("%s: cannot read prompt file", path)) end
  return text, version
end

-- A cache holds at most this many files: paths come from code, but one file has endless
-- spellings ("./p", "a/../p"), and the default loader's cache lives as long as the host.
local MAX_CACHED_FILES = 256

local default_keys, default_key_count = {}, 0 -- path -> its cache key under default options

local function cache_key(path, opts)
  if not opts.strict then -- every render asks: no concat each time
    local key = default_keys[path]
    if not key then
      if default_key_count >= MAX_CACHED_FILES then default_keys, default_key_count = {}, 0 end
      key = path .. "\0"
      default_keys[path] = key
      default_key_count = default_key_count + 1
    end
    return key
  end
  return path .. "\0s"
end

-- The cache of compiled files for a loader and opts.filters. A compiled file holds its
-- filters table, so the files compiled with one are cached under it, weakly: an agent that
-- makes its filters afresh each step (prompt.file at its top level) leaves nothing behind.
local function file_cache_of(loader, filters)
  local caches = file_caches[loader]
  if not caches then
    caches = { plain = { entries = {}, count = 0 }, filtered = setmetatable({}, { __mode = "k" }) }
    file_caches[loader] = caches
  end
  if not filters then return caches.plain end
  local cache = caches.filtered[filters]
  if not cache then
    cache = { entries = {}, count = 0 }
    caches.filtered[filters] = cache
  end
  return cache
end

-- Returns the render and messages functions for a file (see compile), recompiling only
-- when its version changed.
local function file_function(path, opts)
  local loader = current_loader()
  local text, version = read_file(loader, path)
  local key = cache_key(path, opts)
  local cache = file_cache_of(loader, opts.filters)
  local entry = cache.entries[key]
  if entry and version ~= nil and entry.version == version then return entry.fn, entry.messages_fn end
  if entry and version == nil and entry.text == text then return entry.fn, entry.messages_fn end
  local fn, messages_fn = compile(text, path, opts)
  if not entry then
    if cache.count >= MAX_CACHED_FILES then cache.entries, cache.count = {}, 0 end
    cache.count = cache.count + 1
  end
  cache.entries[key] = { version = version, text = version == nil and text or nil, fn = fn, messages_fn = messages_fn }
  return fn, messages_fn
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or ""
end

-- Joins a relative include path onto a directory, folding "." and ".." segments.
local function join_path(dir, rel)
  if rel:sub(1, 1) == "/" then dir = "" end
  local parts = {}
  local abs = (dir ~= "" and dir or rel):sub(1, 1) == "/"
  for seg in (dir .. "/" .. rel):gmatch("[^/]+") do
    if seg == ".." and #parts > 0 and parts[#parts] ~= ".." then
      parts[#parts] = nil
    elseif seg ~= "." then
      parts[#parts + 1] = seg
    end
  end
  return (abs and "/" or "") .. table.concat(parts, "/")
end
prompt._join_path = join_path

function H.include(R, o, from, rel, vars, line)
  local path = join_path(dirname(from), rel)
  local stack = R.stack
  if not stack then -- made at the first include: most renders have none
    stack = { R.name }
    R.stack = stack
  end
  for i, p in ipairs(stack) do
    if p == path then
      local cycle = {}
      for j = i, #stack do cycle[#cycle + 1] = stack[j] end
      cycle[#cycle + 1] = path
      render_error(from, line, "circular include: " .. table.concat(cycle, " -> "))
    end
  end
  if #stack >= MAX_INCLUDE_DEPTH then
    render_error(from, line, fmt("includes nested deeper than %d", MAX_INCLUDE_DEPTH))
  end
  local fn = file_function(path, R.opts)
  stack[#stack + 1] = path
  fn(vars, o, R)
  stack[#stack] = nil
end

----------------------------------------------------------------------------
-- template objects
----------------------------------------------------------------------------

local NO_VARS = {} -- the variables of a render given none; templates only read them

-- Checks the variables; returns the render and messages functions (see compile).
function Template:_functions(vars)
  if vars ~= nil and type(vars) ~= "table" then
    raise("usage", fmt("%s: template variables must be a table, got %s", self.name, type(vars)))
  end
  if self.fn then return self.fn, self.messages_fn end
  return file_function(self.path, self.opts)
end

-- Renders with fn: returns the output's pieces and the role markers (see compile).
function Template:_run(vars, fn)
  fn = fn or self:_functions(vars)
  -- `{ nil, ... }` is an empty table with room for 8 pieces: growing `{}` to hold 1, 2,
  -- 3 and 5 pieces would rehash it four times.
  local o = { nil, nil, nil, nil, nil, nil, nil, nil }
  local R = { roles = { nil, nil, nil, nil }, name = self.name, opts = self.opts } -- 2 markers
  fn(vars or NO_VARS, o, R)
  return o, R.roles
end

-- template.render(vars) (a dot for the colon) said "attempt to call a nil value (method
-- '_run')" from inside this file.
local function check_self(self, method)
  if getmetatable(self) ~= "luagent.prompt.template" then
    raise("usage", fmt("template:%s: call it with a colon (template:%s(vars)), got a %s " ..
      "for the template", method, method, type(self)))
  end
end

---Renders the template to a string; role markers leave nothing behind.
---@param vars? table
---@return string
function Template:render(vars)
  check_self(self, "render")
  return (table.concat((self:_run(vars))))
end

-- Appends to messages the pieces o[from..to] joined and trimmed, as a message of `role`;
-- blank text makes no message unless `always`.
local function add_message(messages, role, o, from, to, always)
  local content
  if from > to then
    content = ""
  elseif from == to then
    content = prompt.trim(o[from]) -- one piece (often): no copy made by a concat first
  else
    content = prompt.trim(table.concat(o, "", from, to))
  end
  if always or content ~= "" then messages[#messages + 1] = { role = role, content = content } end
end

---Renders the template and splits it at `{{ role "..." }}` markers into chat messages.
---Each content is trimmed of surrounding whitespace; text before the first marker
---becomes a message of `opts.default_role` ("user") unless it is only whitespace.
---@param vars? table
---@return luagent.prompt.Message[]
function Template:messages(vars)
  check_self(self, "messages")
  local fn, messages_fn = self:_functions(vars)
  if messages_fn then return messages_fn(vars or NO_VARS, self.opts.default_role or "user") end
  local o, roles = self:_run(vars, fn) -- roles: role, first piece, role, first piece...
  local messages = { nil, nil, nil } -- room for 3 (see _run)
  local after = #o + 1
  add_message(messages, self.opts.default_role or "user", o, 1, (roles[2] or after) - 1, false)
  for i = 1, #roles, 2 do
    add_message(messages, roles[i], o, roles[i + 1], (roles[i + 3] or after) - 1, true)
  end
  return messages
end

Template.__call = Template.render

local function check_opts(opts, where)
  if opts == nil then return {} end
  if type(opts) ~= "table" then raise("usage", where .. ": options must be a table") end
  if opts.filters ~= nil and type(opts.filters) ~= "table" then
    raise("usage", where .. ": opts.filters must be a table of functions")
  end
  return opts
end

---Compiles a template from a string (once); call the result with variables to render it.
---@param source string
---@param opts? luagent.prompt.Options
---@return luagent.prompt.Template
function prompt.template(source, opts)
  opts = check_opts(opts, "prompt.template")
  local name = opts.name or "template"
  local self = setmetatable({ name = name, opts = opts }, Template)
  self.fn, self.messages_fn = compile(source, name, opts)
  return self
end

---A template read from a file through the loader; recompiled only when the file's version changes.
---@param path string
---@param opts? luagent.prompt.Options
---@return luagent.prompt.Template
function prompt.file(path, opts)
  if type(path) ~= "string" or path == "" then raise("usage", "prompt.file: path must be a non-empty string") end
  -- Refused here, not at the first render: the loader reads only inside the agent's folder.
  -- Agents call this at their top level, which runs every step: a path with no ".." in it
  -- (nearly all) is not folded.
  local escapes = string.byte(path, 1) == 47 -- "/"
  if not escapes and string.find(path, "..", 1, true) then
    local folded = join_path("", path)
    escapes = folded == ".." or string.sub(folded, 1, 3) == "../"
  end
  if escapes then raise("forbidden", fmt("prompt.file: '%s' is outside the agent's folder", path)) end
  opts = check_opts(opts, "prompt.file")
  return setmetatable({ name = path, path = path, opts = opts }, Template)
end

---Returns counters for tests and diagnostics.
---@return { compiles: integer }
function prompt.stats()
  return { compiles = prompt._compiles }
end

return prompt
