---@meta luagent.threads
-- luagent.threads: other threads of the store (read, list, fork, cancel). Launching and
-- resuming are the host's (CLI, C++ API): they start steps.
local threads = {}

---@class luagent.ThreadSummary
---@field id string
---@field agent string
---@field status luagent.Status
---@field events integer the number of events (the thread's version)
---@field created string UTC time
---@field updated string UTC time of the last event

---A thread with its events (as `luagent show --format json` prints it).
---@param id string
---@return { id: string, agent: string, status: luagent.Status, created: string, events: luagent.Event[], parent?: { id: string, event: integer } }
function threads.get(id) end

---Threads of the store, newest first.
---@param options? { status?: luagent.Status, agent?: string, limit?: integer }
---@return luagent.ThreadSummary[]
function threads.list(options) end

---A new thread holding events 1..at of thread `id`, with the parent link recorded.
---Nothing runs in it until the host resumes it. Errors with not_found for an event the
---thread does not have.
---@param id string
---@param at integer
---@return string id the fork's id
function threads.fork(id, at) end

---Ends a running or waiting thread with a `cancelled` event (not the caller's own), as the
---host's cancel does: a step in flight on it in this host stops there (an LLM reply or tool
---answer it waited for is dropped), and the host's callbacks and updates hear of the end.
---Errors with conflict for a thread that has already ended.
---@param id string
---@param reason? string
---@return luagent.Event cancelled
function threads.cancel(id, reason) end

return threads
