-- A tiny test library for Lua test files. It uses no io/os, so the same file
-- runs under the system interpreter and inside the host's restricted sandbox.
--
--   local t = require "testing"
--   t.test("adds", function() t.eq(1 + 1, 2) end)
--   t.run()   -- prints ok/FAIL lines and "N passed, N failed"; errors if any failed

local testing = {}

local registered = {}

---Registers a test case; it runs when `testing.run()` is called.
---@param name string
---@param fn fun()
function testing.test(name, fn)
  assert(type(name) == "string", "test name must be a string")
  assert(type(fn) == "function", "test body must be a function")
  registered[#registered + 1] = { name = name, fn = fn }
end

-- Renders a value for failure messages: strings quoted, tables one level per line.
local function show(v, indent, seen)
  indent = indent or ""
  if type(v) == "string" then
    return string.format("%q", v)
  elseif type(v) ~= "table" then
    return tostring(v)
  end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
    return type(a) < type(b)
  end)
  if #keys == 0 then return "{}" end
  local lines = { "{" }
  for _, k in ipairs(keys) do
    local key = type(k) == "string" and k or ("[" .. tostring(k) .. "]")
    lines[#lines + 1] = indent .. "  " .. key .. " = " .. show(v[k], indent .. "  ", seen) .. ","
  end
  lines[#lines + 1] = indent .. "}"
  seen[v] = nil
  return table.concat(lines, "\n")
end

-- Returns nil when a and b are deeply equal, else a path and description of the first difference.
local function diff(a, b, path, depth)
  if depth > 100 then return path .. ": nesting deeper than 100" end
  if type(a) ~= "table" or type(b) ~= "table" then
    if a == b or (a ~= a and b ~= b) then return nil end
    if type(a) == "string" and type(b) == "string" then
      local i = 1
      while i <= #a and a:sub(i, i) == b:sub(i, i) do i = i + 1 end
      return string.format("%s: strings differ at byte %d\n  actual:   %s\n  expected: %s",
        path, i, show(a), show(b))
    end
    return string.format("%s: actual %s, expected %s", path, show(a), show(b))
  end
  for k, v in pairs(a) do
    local d = diff(v, b[k], path .. "[" .. show(k) .. "]", depth + 1)
    if d then return d end
  end
  for k, v in pairs(b) do
    if a[k] == nil then
      return string.format("%s[%s]: missing, expected %s", path, show(k), show(v))
    end
  end
  return nil
end

---Fails the current test unless `actual` deeply equals `expected`.
---@param actual any
---@param expected any
---@param msg? string context printed with the failure
function testing.eq(actual, expected, msg)
  local d = diff(actual, expected, "value", 0)
  if d then
    error((msg and (msg .. "\n") or "") .. d, 2)
  end
end

---Fails the current test unless `value` is truthy.
---@param value any
---@param msg? string
function testing.ok(value, msg)
  if not value then error(msg or "expected a truthy value", 2) end
end

---Fails unless `fn` raises an error whose message contains the Lua pattern `pattern`.
---@param fn fun()
---@param pattern string Lua pattern searched in the error message
---@return string message the error message, for further checks
function testing.raises(fn, pattern)
  local ok, err = pcall(fn)
  if ok then error("expected an error matching " .. show(pattern) .. ", got none", 2) end
  local text = type(err) == "table" and tostring(err.message or err) or tostring(err)
  if pattern and not text:find(pattern) then
    error("error " .. show(text) .. " does not match " .. show(pattern), 2)
  end
  return text
end

---Runs every registered test, prints one line per test and a summary; raises if any failed.
---@return integer passed
function testing.run()
  local passed, failed = 0, 0
  for _, case in ipairs(registered) do
    local ok, err = xpcall(case.fn, function(e)
      return type(e) == "string" and e or show(e)
    end)
    if ok then
      passed = passed + 1
      print("ok   " .. case.name)
    else
      failed = failed + 1
      print("FAIL " .. case.name .. "\n  " .. tostring(err):gsub("\n", "\n  "))
    end
  end
  registered = {}
  print(string.format("%d passed, %d failed", passed, failed))
  if failed > 0 then error(string.format("%d test(s) failed", failed), 0) end
  return passed
end

return testing
