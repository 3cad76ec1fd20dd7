---@meta luagent.source
-- luagent.source: files of the running agent's own folder (used by luagent.prompt).
local source = {}

---Reads a file of the agent's folder. Paths that leave the folder are refused.
---@param path string relative to the agent's folder
---@return string text
---@return string version content hash, changes when the file does
function source.read(path) end

return source
