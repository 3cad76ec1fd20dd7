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
--- Every run shares it, so agents can only read it; `skip` changes it per call.
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

-- context.xml runs on every LLM step, over every event of the thread. Each call of a C
-- function from Lua (type, tostring, string.find, table.concat...) costs a few hundred
-- instructions, more than the Lua around it, so the helpers below skip the calls they can.
local type, tostring, pairs, pcall, error = type, tostring, pairs, pcall, error
local concat, sort = table.concat, table.sort
local find, byte = string.find, string.byte
local math_type, floor, huge = math.type, math.floor, math.huge

-- Bad arguments are usage errors, raised in the shape every luagent module raises (a table
-- with code and message, whose tostring is "message [code]"), so a script reads err.code
-- whichever module failed. luagent.prompt is loaded only when one is raised.
local function usage_error(message)
  require("luagent.prompt")._raise("usage", message)
end

local NO_OPTS = {} -- read, never written: the options of a call that passed none
local NO_HIDDEN = {} -- read, never written: hides nothing

-- Texts of small whole numbers (ids, counts, a calculator's results), each printed once:
-- printing costs an snprintf. A float key with a whole value is the same key as the integer.
local small_number_text = {}

local function format_number(n)
  local text = small_number_text[n]
  if text then return text end
  -- Whole numbers a double holds exactly print as integer digits; `n | 0` makes the
  -- integer and `..` prints it as tostring would.
  if n == n // 1 and n > -2 ^ 53 and n < 2 ^ 53 then
    text = (n | 0) .. ""
    if n >= -1000 and n <= 1000 then small_number_text[n] = text end
    return text
  end
  if math_type(n) == "integer" then return tostring(n) end
  if n ~= n then return "NaN" end
  if n == huge then return "Infinity" end
  if n == -huge then return "-Infinity" end
  if n == floor(n) and n > -2 ^ 53 and n < 2 ^ 53 then return fmt("%d", n) end
  -- the shortest of %.15g, %.16g, %.17g that reads back as n
  local s = fmt("%.15g", n)
  if tonumber(s) == n then return s end
  s = fmt("%.16g", n)
  if tonumber(s) == n then return s end
  return fmt("%.17g", n)
end

-- Strings known to be "plain": no line break and no space or tab first. Event types,
-- intents and field names come back in every event of every step: each is checked once,
-- and then a table lookup stands for both type() (a key equal to a string is that string)
-- and the search for indentation (a body made of plain keys and numbers has none). The set
-- is bounded, so that data with ever new keys cannot grow it without end.
local plain_strings, plain_count = {}, 0
local MAX_PLAIN_STRINGS = 1000

-- Whether string s is plain (remembering it if so).
local function is_plain(s)
  if plain_strings[s] then return true end
  if not find(s, "^[^ \t\n\r][^\n\r]*$") then return false end
  if plain_count < MAX_PLAIN_STRINGS then
    plain_count = plain_count + 1
    plain_strings[s] = true
  end
  return true
end

-- Key order for keys of different types: numbers first, then strings, the rest by tostring.
local function mixed_key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta == "number" end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

---Returns the keys of t in mixed_key_less order, their count, and their type when they
---are all strings or all numbers (else nil). Such keys sort with `<` alone: the same
---order, without a Lua comparator calling type() twice per comparison.
local function sorted_keys(t)
  -- `{ nil, nil, nil, nil }` is an empty table with room for 4 entries: growing `{}` to
  -- hold 1, 2, then 3 entries would rehash it three times.
  local keys, n, key_type, uniform = { nil, nil, nil, nil }, 0, nil, true
  for k in pairs(t) do
    n = n + 1
    keys[n] = k
    local tk = "string"
    if not plain_strings[k] then
      tk = type(k)
      if tk == "string" then is_plain(k) end -- remembered for the next event
    end
    if tk ~= key_type then
      if key_type == nil then key_type = tk else uniform = false end
    end
  end
  if uniform and (key_type == "string" or key_type == "number") then
    -- the usual sizes (an intent and its two arguments) without a table.sort call
    if n == 2 then
      if keys[2] < keys[1] then keys[1], keys[2] = keys[2], keys[1] end
    elseif n == 3 then
      local a, b, c = keys[1], keys[2], keys[3]
      if b < a then a, b = b, a end
      if c < b then
        b, c = c, b
        if b < a then a, b = b, a end
      end
      keys[1], keys[2], keys[3] = a, b, c
    elseif n > 3 then
      sort(keys)
    end
    return keys, n, key_type
  end
  if n > 1 then sort(keys, mixed_key_less) end
  return keys, n, nil
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

local function events_field(source) return source.events end

-- Returns the array of events of a thread, or of an array of events (not yet checked).
local function events_of(source, where)
  local ts = type(source)
  if ts ~= "table" and ts ~= "userdata" then
    usage_error(fmt("%s: expected a thread or an array of events, got %s", where, ts))
  end
  local ok, method = pcall(events_field, source)
  local events
  if ok and type(method) == "function" then
    events = method(source)
  elseif ok and type(method) == "table" then
    events = method
  else
    events = source
  end
  if type(events) ~= "table" then
    usage_error(fmt("%s: thread:events() returned a %s, expected an array", where, type(events)))
  end
  return events
end

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
    local why = d.reason == "abandoned" and "the coroutine running the tool was abandoned"
      or "the host stopped"
    return "the tool call in event " .. tostring(d.call) ..
      " started but its outcome was never recorded (" .. why .. "); it may or may not have run"
  end
  return d
end

local function check_opts(opts, where)
  if opts == nil then return NO_OPTS end
  if type(opts) ~= "table" then usage_error(where .. ": options must be a table") end
  local last, truncate = opts.last, opts.truncate
  if last ~= nil and (math_type(last) ~= "integer" or last < 0) then
    usage_error(where .. ": opts.last must be a non-negative integer")
  end
  if truncate ~= nil and (math_type(truncate) ~= "integer" or truncate < 0) then
    usage_error(where .. ": opts.truncate must be a non-negative integer")
  end
  if opts.skip ~= nil and type(opts.skip) ~= "table" then
    usage_error(where .. ": opts.skip must be a table of type names")
  end
  if opts.only ~= nil and type(opts.only) ~= "table" then
    usage_error(where .. ": opts.only must be a table of type names")
  end
  if opts.format ~= nil and type(opts.format) ~= "function" then
    usage_error(where .. ": opts.format must be a function")
  end
  return opts
end

-- Returns the events of a source, each checked to be a table with a string type.
local function checked_events(source, where)
  local events = events_of(source, where)
  for i = 1, #events do
    local e = events[i]
    local ty = type(e) == "table" and e.type
    if not plain_strings[ty] then
      if type(ty) ~= "string" then
        usage_error(fmt("%s: event %d is not a table with a string 'type'", where, i))
      end
      is_plain(ty) -- remembered for the next event
    end
  end
  return events
end

-- The types and intents opts hides; nil when opts.only chooses instead.
local function hidden_set(opts)
  if opts.only then return nil end
  if not opts.skip then return context.HIDDEN end -- read as it is: no copy per call
  local hidden = {}
  for k, v in pairs(context.HIDDEN) do hidden[k] = v end
  for k, v in pairs(opts.skip) do hidden[k] = v and true or nil end
  return hidden
end

-- Returns the tag event e is shown under: its data's intent if it has one, else its type;
-- nil if `only` or `hidden` leave it out.
local function shown_tag(e, only, hidden)
  local ty = e.type
  if not only and hidden[ty] then return nil end -- hidden by its type, whatever its tag
  local tag, d = ty, e.data
  if type(d) == "table" then
    local intent = d.intent
    if plain_strings[intent] then
      tag = intent
    elseif intent ~= nil and type(intent) == "string" and intent ~= "" then -- no type() call for most events
      tag = intent
      is_plain(intent) -- remembered for the next event
    end
  end
  if only then
    if only[ty] or only[tag] then return tag end
  elseif not hidden[tag] then
    return tag
  end
  return nil
end

-- Applies skip/only/last: returns the events the model sees, in order, their tags
-- (shown_tag), and their count.
local function visible(source, opts, where)
  local events = checked_events(source, where)
  local only, hidden = opts.only, hidden_set(opts)
  local shown, tags, n = {}, {}, 0
  for i = 1, #events do
    local e = events[i]
    local tag = shown_tag(e, only, hidden)
    if tag then
      n = n + 1
      shown[n], tags[n] = e, tag
    end
  end
  local last = opts.last
  if last and n > last then
    local from = n - last
    for i = 1, last do shown[i], tags[i] = shown[from + i], tags[from + i] end
    for i = n, last + 1, -1 do shown[i], tags[i] = nil, nil end
    n = last
  end
  return shown, tags, n
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
  if is_array(v) then
    local parts = {}
    for i = 1, #v do parts[i] = inline_value(v[i], depth + 1, seen) end
    seen[v] = nil
    return "[" .. concat(parts, ", ") .. "]"
  end
  local keys, n, key_type = sorted_keys(v)
  for i = 1, n do -- each entry replaces its key, already read
    local k = keys[i]
    -- `..` writes a string or number key as tostring would, without the call
    keys[i] = (key_type and k or tostring(k)) .. ": " .. inline_value(v[k], depth + 1, seen)
  end
  seen[v] = nil
  return "{" .. concat(keys, ", ", 1, n) .. "}"
end

-- Returns an event body's text, and false when it surely has no line starting with a
-- space or tab (numbers, booleans, tables of plain keys and such values), which spares
-- render_event the search for one.
local function xml_body(data)
  local td = type(data)
  if td == "string" then return data, true end
  if td == "number" then return format_number(data), false end
  if data == nil then return "", false end
  if td ~= "table" then return tostring(data), td ~= "boolean" end
  local keys, n, key_type = sorted_keys(data)
  local count, seen, may_indent = 0, nil, key_type == nil and n > 0
  for i = 1, n do -- each line replaces a key already read (count <= i)
    local k = keys[i]
    if k ~= "intent" then
      local v = data[k]
      local tv = type(v)
      local text
      if tv == "number" then
        text = small_number_text[v] or format_number(v) -- a hit saves the call
      elseif tv == "boolean" then
        text = v and "true" or "false"
      else
        if tv == "table" then seen = seen or { [data] = true } end
        text = inline_value(v, 1, seen)
        may_indent = true
      end
      if key_type then
        if not may_indent and key_type == "string" and not (plain_strings[k] or is_plain(k)) then
          may_indent = true
        end
        count = count + 1
        keys[count] = k .. ": " .. text
      else
        count = count + 1
        keys[count] = tostring(k) .. ": " .. text
      end
    end
  end
  -- the usual sizes, without a table.concat call
  if count == 1 then return keys[1], may_indent end
  if count == 2 then return keys[1] .. "\n" .. keys[2], may_indent end
  return concat(keys, "\n", 1, count), may_indent
end

local function has_indented_line(body)
  local first = byte(body, 1)
  if first == 32 or first == 9 then return true end
  -- Plain searches (memchr) cost less than the pattern scan; most bodies are one line,
  -- ruled out by one search for each line break.
  local lf, cr = find(body, "\n", 1, true), find(body, "\r", 1, true)
  return (lf and (find(body, "\n ", lf, true) or find(body, "\n\t", lf, true)))
    or (cr and (find(body, "\r ", cr, true) or find(body, "\r\t", cr, true))) or false
end

-- Renders one event under `tag` (see context.xml_event).
local function render_event(event, tag, limit, keep_indent)
  local body, may_indent = xml_body(context.payload(event))
  if limit then body = truncate(body, limit) end
  local text = "\n<" .. tag .. ">\n" .. body .. "\n</" .. tag .. ">\n"
  -- The template strips spaces and tabs at the start of every line (body included). Only
  -- the body's lines, or a tag with a line break in it, can start with them, and the
  -- pattern scan costs more than the rest of the rendering: rule it out first.
  if not keep_indent and ((may_indent and has_indented_line(body)) or not (plain_strings[tag] or is_plain(tag))) then
    text = text:gsub("([\n\r])[ \t]+", "%1")
  end
  return text
end

---Renders one event as the 12-factor template does: "\n<TAG>\nBODY\n</TAG>\n".
---@param event table
---@param opts? luagent.context.Options
---@return string
function context.xml_event(event, opts)
  opts = check_opts(opts, "context.xml_event")
  if type(event) ~= "table" or type(event.type) ~= "string" then
    usage_error("context.xml_event: expected an event (a table with a string 'type'), got " ..
      (type(event) == "table" and "a table with no string 'type'" or type(event)))
  end
  return render_event(event, shown_tag(event, nil, NO_HIDDEN), opts.truncate, opts.keep_indent)
end

---Serialises a thread exactly like the 12-factor-agents template's `Thread.serializeForLLM`:
---each visible event as "\n<TAG>\nBODY\n</TAG>\n", joined with "\n".
---@param thread_or_events table a thread (with :events()) or an array of events
---@param opts? luagent.context.Options
---@return string
function context.xml(thread_or_events, opts)
  opts = check_opts(opts, "context.xml")
  local limit, keep_indent, format = opts.truncate, opts.keep_indent, opts.format
  local parts, count = { nil, nil, nil, nil, nil, nil, nil, nil }, 0 -- room for 8 (see sorted_keys)
  if not format and not opts.last then
    -- The agents' usual call: each event is rendered as it is found shown, without the
    -- arrays of shown events and tags that `last` and `format` need.
    local events = checked_events(thread_or_events, "context.xml")
    local only, hidden = opts.only, hidden_set(opts)
    for i = 1, #events do
      local e = events[i]
      local tag = shown_tag(e, only, hidden)
      if tag then
        count = count + 1
        parts[count] = render_event(e, tag, limit, keep_indent)
      end
    end
    return concat(parts, "\n", 1, count)
  end
  local shown, tags, n = visible(thread_or_events, opts, "context.xml")
  for i = 1, n do
    local e = shown[i]
    local custom = format and format(e)
    local text
    if type(custom) == "string" then
      text = custom
    elseif custom ~= false then
      text = render_event(e, tags[i], limit, keep_indent)
    end
    if text then
      count = count + 1
      parts[count] = text
    end
  end
  return concat(parts, "\n", 1, count)
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
      or YAML_RESERVED[s:lower()] or tonumber(s) or s:find("^[%+%-]?%.?%d")
      or s:find("^[%+%-]?%.[iI][nN][fF]$") or s:find("^%.[nN][aA][nN]$") then -- read as numbers
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
    if type(opts.system) ~= "string" then usage_error("context.messages: opts.system must be a string") end
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

-- Installed tokenizers, by the coroutine that installed them. The module is shared by every
-- run of the host: one agent's function must never run inside another's step.
local tokenizers = setmetatable({}, { __mode = "k" })

---Estimates the number of tokens in `text`: ceil(UTF-8 characters / 4), or the tokenizer
---this run installed with `context.set_tokenizer`.
---@param text string
---@param model? string passed to the host tokenizer
---@return integer
function context.tokens(text, model)
  if type(text) ~= "string" then
    usage_error("context.tokens: expected a string, got " .. type(text))
  end
  local tokenizer = tokenizers[coroutine.running()]
  if tokenizer then return tokenizer(text, model) end
  local chars = utf8.len(text) or #text
  return (chars + 3) // 4
end

---Installs a real token counter for the calling run (its step; inside a coroutine the agent
---made, for that coroutine); nil restores the estimate. Other runs are not affected.
---@param fn? fun(text: string, model?: string): integer
function context.set_tokenizer(fn)
  if fn ~= nil and type(fn) ~= "function" then usage_error("context.set_tokenizer: expected a function") end
  tokenizers[coroutine.running()] = fn
end

return context
