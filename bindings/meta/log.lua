---@meta luagent.log
-- luagent.log: messages to the host's log (stderr in the CLI; LUAGENT_DEBUG=1 shows debug).
local log = {}

---@param ... any
function log.debug(...) end
---@param ... any
function log.info(...) end
---@param ... any
function log.warn(...) end
---@param ... any
function log.error(...) end

return log
