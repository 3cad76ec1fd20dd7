--- luagent.context — serialise a thread into a context window (factor 3: own your context window).
---
--- A thread's events are `{ id = 1, type = "user_input", data = ..., at = "..." }`.
--- Every serialiser takes a thread (anything with `:events()`) or an array of events,
--- and the same options (`luagent.context.Options`) to choose which events the
--- model sees. Lua tables have no key order, so table data is always written in
--- sorted key order (numbers first, then strings): the same thread always gives
--- the same prompt.

local context = {}

local fmt = string.format

--- Event types the host records for its own bookkeeping; hidden from the model by default.
--- `error` and `outcome_unknown` are NOT here: the model must see them (factor 9).
context.HIDDEN = {
  await = true, approval = true, tool_started = true, done = true, cancelled = true, llm_call = true,
}

local MAX_VALUE_DEPTH = 32 -- nested data deeper than this is written as "..."

---@class luagent.context.Options
---@field skip? table<string, boolean> event types (or intents) to hide, merged over context.HIDDEN; `false` shows a type hidden by default
---@field only? table<string, boolean> if set, show only events whose type (or intent) is listed; context.HIDDEN and skip are ignored
---@field last? integer keep only the last N visible events
---@field truncate? integer cut each event body to N characters, ending with a "...[truncated K chars]" marker
---@field format? fun(event: table): string|false|nil per-event override: a string replaces the event's whole rendering, false drops the event, nil keeps the default
---@field keep_indent? boolean xml only: keep leading whitespace of body lines (the 12-factor template strips it)
---@field system? string messages only: a system message put first

----------------------------------------------------------------------------
-- shared helpers
----------------------------------------------------------------------------

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

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta == "number" end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

-- A table is written as a list when its keys are exactly 1..#t.
local function is_array(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local function json(v)
  return require("luagent.prompt").json(v)
end

-- Returns the array of events of a thread, or of an array of events.
local function events_of(source, where)
  if type(source) ~= "table" and type(source) ~= "userdata" then
    error(fmt("%s: expected a thread or an array of events, got %s", where, type(source)), 0)
  end
  local ok, method = pcall(function() return source.events end)
  local events
  if ok and type(method) == "function" then
    events = method(source)
  elseif ok and type(method) == "table" then
    events = method
  else
    events = source
  end
  if type(events) ~= "table" then
    error(fmt("%s: thread:events() returned a %s, expected an array", where, type(events)), 0)
  end
  for i = 1, #events do
    local e = events[i]
    if type(e) ~= "table" or type(e.type) ~= "string" then
      error(fmt("%s: event %d is not a table with a string 'type'", where, i), 0)
    end
  end
  return events
end

-- The tag an event is shown under: its data's intent if it has one, else its type.
--- What a serialiser shows of an event. A tool_response written by thread:execute
--- holds { call = <event id>, result = ... } (or error = ...); the model sees the
--- result alone, as in the 12-factor template, and the call link stays in the store.
---@param e table an event
---@return any
function context.payload(e)
  local d = e.data
  if e.type == "tool_response" and type(d) == "table" and d.call ~= nil then
    if d.error ~= nil then return { error = d.error } end
    return d.result
  end
  if e.type == "outcome_unknown" and type(d) == "table" and d.call ~= nil then
    return "the tool call in event " .. tostring(d.call) ..
      " started but its outcome was never recorded (the host stopped); it may or may not have run"
  end
  return d
end

local function tag_of(e)
  local d = e.data
  if type(d) == "table" and type(d.intent) == "string" and d.intent ~= "" then return d.intent end
  return e.type
end

local function check_opts(opts, where)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(where .. ": options must be a table", 0) end
  for _, k in ipairs { "last", "truncate" } do
    local v = opts[k]
    if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
      error(fmt("%s: opts.%s must be a non-negative integer", where, k), 0)
    end
  end
  for _, k in ipairs { "skip", "only" } do
    if opts[k] ~= nil and type(opts[k]) ~= "table" then
      error(fmt("%s: opts.%s must be a table of type names", where, k), 0)
    end
  end
  if opts.format ~= nil and type(opts.format) ~= "function" then
    error(where .. ": opts.format must be a function", 0)
  end
  return opts
end

-- Applies skip/only/last: returns the events the model sees, in order.
local function visible(source, opts, where)
  local events = events_of(source, where)
  local shown = {}
  local hidden
  if not opts.only then
    hidden = {}
    for k, v in pairs(context.HIDDEN) do hidden[k] = v end
    for k, v in pairs(opts.skip or {}) do hidden[k] = v and true or nil end
  end
  for i = 1, #events do
    local e = events[i]
    local tag = tag_of(e)
    local keep
    if opts.only then
      keep = opts.only[e.type] or opts.only[tag]
    else
      keep = not (hidden[e.type] or hidden[tag])
    end
    if keep then shown[#shown + 1] = e end
  end
  if opts.last and #shown > opts.last then
    local tail = {}
    for i = #shown - opts.last + 1, #shown do tail[#tail + 1] = shown[i] end
    shown = tail
  end
  return shown
end

local function truncate(body, limit)
  if not limit then return body end
  local len = utf8.len(body)
  if not len then -- not valid UTF-8: count bytes
    if #body <= limit then return body end
    return body:sub(1, limit) .. fmt("...[truncated %d chars]", #body - limit)
  end
  if len <= limit then return body end
  local cut = utf8.offset(body, limit + 1)
  return body:sub(1, cut - 1) .. fmt("...[truncated %d chars]", len - limit)
end

----------------------------------------------------------------------------
-- xml (the 12-factor-agents template format)
----------------------------------------------------------------------------

-- Scalars as JavaScript's String() writes them; lists as "[a, b]" and maps as
-- "{k: v}" (the template's String() would print "[object Object]").
local function inline_value(v, depth, seen)
  local tv = type(v)
  if tv == "string" then return v end
  if tv == "number" then return format_number(v) end
  if v == nil then return "undefined" end
  if tv ~= "table" then return tostring(v) end
  if depth > MAX_VALUE_DEPTH then return "..." end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = inline_value(v[i], depth + 1, seen) end
    seen[v] = nil
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  for _, k in ipairs(sorted_keys(v)) do
    parts[#parts + 1] = tostring(k) .. ": " .. inline_value(v[k], depth + 1, seen)
  end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function xml_body(data)
  if type(data) ~= "table" then
    if data == nil then return "" end
    return inline_value(data, 0, {})
  end
  local lines = {}
  for _, k in ipairs(sorted_keys(data)) do
    if k ~= "intent" then
      lines[#lines + 1] = tostring(k) .. ": " .. inline_value(data[k], 1, { [data] = true })
    end
  end
  return table.concat(lines, "\n")
end

local function has_indented_line(body)
  local first = body:byte(1)
  return first == 32 or first == 9 or body:find("\n ", 1, true) or body:find("\n\t", 1, true)
    or body:find("\r ", 1, true) or body:find("\r\t", 1, true)
end

---Renders one event as the 12-factor template does: "\n<TAG>\nBODY\n</TAG>\n".
---@param event table
---@param opts? luagent.context.Options
---@return string
function context.xml_event(event, opts)
  opts = opts or {}
  local tag = tag_of(event)
  local body = truncate(xml_body(context.payload(event)), opts.truncate)
  local text = "\n<" .. tag .. ">\n" .. body .. "\n</" .. tag .. ">\n"
  -- The template strips spaces and tabs at the start of every line (body included). Only
  -- the body's lines can start with them, and the pattern scan costs more than the rest
  -- of the rendering: plain searches (memchr) rule it out first.
  if not opts.keep_indent and has_indented_line(body) then
    text = text:gsub("([\n\r])[ \t]+", "%1")
  end
  return text
end

---Serialises a thread exactly like the 12-factor-agents template's `Thread.serializeForLLM`:
---each visible event as "\n<TAG>\nBODY\n</TAG>\n", joined with "\n".
---@param thread_or_events table a thread (with :events()) or an array of events
---@param opts? luagent.context.Options
---@return string
function context.xml(thread_or_events, opts)
  opts = check_opts(opts, "context.xml")
  local parts = {}
  for _, e in ipairs(visible(thread_or_events, opts, "context.xml")) do
    local custom = opts.format and opts.format(e)
    if type(custom) == "string" then
      parts[#parts + 1] = custom
    elseif custom ~= false then
      parts[#parts + 1] = context.xml_event(e, opts)
    end
  end
  return table.concat(parts, "\n")
end

----------------------------------------------------------------------------
-- yaml
----------------------------------------------------------------------------

local YAML_RESERVED = {
  ["true"] = true, ["false"] = true, yes = true, no = true, on = true, off = true,
  y = true, n = true, null = true, ["~"] = true,
}

local function yaml_quoted(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    if c == "\r" then return "\\r" end
    return fmt("\\x%02x", c:byte())
  end) .. '"'
end

-- A string is written plain only when YAML would read it back as the same string.
local function yaml_string(s)
  if s == "" or s:find("^%s") or s:find("%s$") or s:find("%c")
      or s:find("^[%-%?:,%[%]{}#&%*!|>'\"%%@`]") or s:find(":%s") or s:find(":$") or s:find("%s#")
      or YAML_RESERVED[s:lower()] or tonumber(s) or s:find("^[%+%-]?%.?%d") then
    return yaml_quoted(s)
  end
  return s
end

local function yaml_scalar(v)
  local tv = type(v)
  if tv == "string" then return yaml_string(v) end
  if tv == "number" then
    if v ~= v then return ".nan" end
    if v == math.huge then return ".inf" end
    if v == -math.huge then return "-.inf" end
    return format_number(v)
  end
  if v == nil then return "null" end
  if tv == "boolean" then return tostring(v) end
  return yaml_quoted(tostring(v))
end

-- Multi-line strings become literal blocks when that is exact; returns nil when not possible.
local function yaml_block_lines(s)
  if not s:find("\n") or s:find("[%z\1-\8\11-\31\127]") or s:find("^[ \t]") then return nil end
  local chomp = "|-"
  local body = s
  if s:sub(-1) == "\n" then
    body = s:sub(1, -2)
    chomp = body:sub(-1) == "\n" and "|+" or "|"
    if chomp == "|+" then body = s:sub(1, -2) end
  end
  local lines = {}
  for line in (body .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  return chomp, lines
end

local yaml_node

-- Appends "prefix value" to out, where value may need its own indented lines.
local function yaml_entry(out, prefix, v, indent, depth, seen)
  if type(v) == "string" then
    local chomp, lines = yaml_block_lines(v)
    if chomp then
      out[#out + 1] = indent .. prefix .. " " .. chomp
      for _, l in ipairs(lines) do out[#out + 1] = l == "" and "" or (indent .. "  " .. l) end
      return
    end
  end
  if type(v) == "table" and next(v) ~= nil then
    if depth > MAX_VALUE_DEPTH or seen[v] then
      out[#out + 1] = indent .. prefix .. " " .. yaml_quoted(seen[v] and "<cycle>" or "...")
      return
    end
    if prefix == "-" then -- compact list item: "- a: 1" with the rest aligned under "a"
      local child = {}
      yaml_node(child, v, "", depth + 1, seen)
      for i, l in ipairs(child) do
        out[#out + 1] = l == "" and "" or (indent .. (i == 1 and "- " or "  ") .. l)
      end
      return
    end
    out[#out + 1] = indent .. prefix
    yaml_node(out, v, indent .. "  ", depth + 1, seen)
    return
  end
  if type(v) == "table" then
    out[#out + 1] = indent .. prefix .. " {}"
    return
  end
  out[#out + 1] = indent .. prefix .. " " .. yaml_scalar(v)
end

function yaml_node(out, t, indent, depth, seen)
  seen[t] = true
  if is_array(t) then
    for i = 1, #t do yaml_entry(out, "-", t[i], indent, depth, seen) end
  else
    for _, k in ipairs(sorted_keys(t)) do
      local key = type(k) == "string" and yaml_string(k) or yaml_scalar(k)
      yaml_entry(out, key .. ":", t[k], indent, depth, seen)
    end
  end
  seen[t] = nil
end

---Serialises the visible events as a YAML list of `type`/`data` mappings
---(table data as nested mappings in sorted key order, multi-line strings as literal blocks).
---@param thread_or_events table a thread (with :events()) or an array of events
---@param opts? luagent.context.Options
---@return string
function context.yaml(thread_or_events, opts)
  opts = check_opts(opts, "context.yaml")
  local out = {}
  for _, e in ipairs(visible(thread_or_events, opts, "context.yaml")) do
    local custom = opts.format and opts.format(e)
    if type(custom) == "string" then
      out[#out + 1] = custom
    elseif custom ~= false then
      local item = { "type: " .. yaml_string(e.type) }
      local data = context.payload(e)
      if type(data) == "string" and opts.truncate then data = truncate(data, opts.truncate) end
      if data ~= nil then yaml_entry(item, "data:", data, "", 1, {}) end
      out[#out + 1] = "- " .. item[1]
      for i = 2, #item do out[#out + 1] = item[i] == "" and "" or ("  " .. item[i]) end
    end
  end
  if #out == 0 then return "" end
  return table.concat(out, "\n") .. "\n"
end

----------------------------------------------------------------------------
-- chat messages
----------------------------------------------------------------------------

local USER_TYPES = { user_input = true, human_response = true }

---Converts the visible events to OpenAI-style chat messages:
---user_input/human_response -> user (string data as is, other data as JSON);
---events whose data has an `intent` -> assistant, content = JSON of the data;
---every other event (tool_response, error, outcome_unknown, ...) -> user, content =
---the event's xml block ("<tool_response>\n12\n</tool_response>").
---@param thread_or_events table a thread (with :events()) or an array of events
---@param opts? luagent.context.Options
---@return { role: string, content: string }[]
function context.messages(thread_or_events, opts)
  opts = check_opts(opts, "context.messages")
  local messages = {}
  if opts.system ~= nil then
    if type(opts.system) ~= "string" then error("context.messages: opts.system must be a string", 0) end
    messages[1] = { role = "system", content = opts.system }
  end
  for _, e in ipairs(visible(thread_or_events, opts, "context.messages")) do
    local data = context.payload(e)
    local msg
    if USER_TYPES[e.type] then
      local text = type(data) == "string" and data or (data == nil and "" or json(data))
      msg = { role = "user", content = truncate(text, opts.truncate) }
    elseif type(data) == "table" and type(data.intent) == "string" and data.intent ~= "" then
      msg = { role = "assistant", content = json(data) }
    else
      local block = require("luagent.prompt").trim(context.xml_event(e, opts))
      msg = { role = "user", content = block }
    end
    messages[#messages + 1] = msg
  end
  return messages
end

----------------------------------------------------------------------------
-- tokens
----------------------------------------------------------------------------

local tokenizer -- set by the host when it has a real one

---Estimates the number of tokens in `text`: ceil(UTF-8 characters / 4), or the host's
---tokenizer once one is installed with `context.set_tokenizer`.
---@param text string
---@param model? string passed to the host tokenizer
---@return integer
function context.tokens(text, model)
  if type(text) ~= "string" then
    error("context.tokens: expected a string, got " .. type(text), 0)
  end
  if tokenizer then return tokenizer(text, model) end
  local chars = utf8.len(text) or #text
  return (chars + 3) // 4
end

---Installs a real token counter (the host does this when it has one); nil restores the estimate.
---@param fn? fun(text: string, model?: string): integer
function context.set_tokenizer(fn)
  if fn ~= nil and type(fn) ~= "function" then error("context.set_tokenizer: expected a function", 0) end
  tokenizer = fn
end

return context
