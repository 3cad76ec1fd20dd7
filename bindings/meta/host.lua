---@meta luagent.host
-- C++ tools the embedding program registered (Host::tool, Host::async_tool).

---@class luagent.host
local host = {}

---Calls the host tool `name` with `args`; returns its result. An asynchronous tool
---suspends only this coroutine until the program answers. When the tool declares a
---schema, `args` are checked and coerced first, as llm.json replies are (near misses
---fixed, unknown fields such as `intent` dropped). Raises an error table
---{ code, message }: not_found for an unknown tool, usage for arguments that do not
---fit the schema (naming the field), or the tool's own failure. An asynchronous tool
---called where the step cannot wait (table.sort's comparator, string.gsub's replacement,
---a __tostring, a module's top level) is refused with usage before it starts.
---@param name string
---@param args? table
---@return any result
function host.call(name, args) end

---The tool `name` as a function(args), e.g. thread:execute(call, host.tool("trade")).
---@param name string
---@return fun(args: table): any
function host.tool(name) end

---Every registered tool's argument schema, by name (merge into llm.one_of's intents).
---@return table<string, table>
function host.tools() end

return host
