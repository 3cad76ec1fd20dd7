---@meta luagent.json
-- luagent.json: JSON with the host's conversion rules (bindings/lua_json.cpp).
-- Arrays are tables with keys 1..n (or marked with json.array); JSON null is json.null
-- inside arrays and nil inside objects. Cycles, NaN/inf, functions, strings that are not
-- UTF-8 and nesting deeper than 100 levels are errors.
local json = {}

---A value that stands for JSON null inside arrays.
json.null = nil ---@type lightuserdata

---@param value any
---@param opts? { indent: boolean }
---@return string
function json.encode(value, opts) end

---@param text string
---@return any
function json.decode(text) end

---Marks `items` (or a new table) as a JSON array, so an empty one encodes as [].
---@param items? table
---@return table
function json.array(items) end

return json
