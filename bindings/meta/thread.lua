---@meta
-- LuaLS annotations for the `thread` object an agent function receives.
-- Implemented in bindings/lua_thread.cpp.

---An event of a thread. `id` is its 1-based position.
---@class luagent.Event
---@field id integer
---@field type string "user_input", an intent ("multiply"), "tool_response", "await", ...
---@field data any
---@field at string UTC time, "2026-11-21T20:00:00.123Z"
---@field version? string content hash of the agent scripts and prompts that wrote it

---The answer a paused thread was resumed with.
---@class luagent.Answer
---@field type string "approval" or "human_response" (or the resume event's type); "retry"
---when the step recovers an idempotent tool call a crash interrupted
---@field by? string who answered, when the resume said (`luagent resume --by WHO`)
---@field approved? boolean approvals: true to run the call, false to reject it
---@field comment? string rejections: the human's feedback
---@field text? string human responses: what the human said

---@alias luagent.Status "running"|"awaiting_human"|"awaiting_approval"|"done"|"failed"|"cancelled"

---@class luagent.Thread
---@field id string the thread's id
---@field agent string the agent's name
local Thread = {}

---All events, oldest first (a fresh array; the event tables are read-only data).
---@return luagent.Event[]
function Thread:events() end

---The last event, or the last event of `type`.
---@param type? string
---@return luagent.Event|nil
function Thread:last(type) end

---Appends an event and returns it (with its id) at once; the loop turn's group commit
---makes it durable before anyone outside the run hears of it, and a failed commit fails
---the step. Pushing a table makes it a call that thread:execute and thread:await can
---refer to. The types luagent writes itself (await, tool_started, tool_response,
---outcome_unknown, done, failed, cancelled) are refused: use the verb that writes them.
---@param type string
---@param data any JSON-compatible value
---@return luagent.Event
function Thread:push(type, data) end

---Pauses the thread until a human answers. Use as `return thread:await(kind, payload)`,
---in the agent function: inside a tool that thread:execute runs it is an error.
---@param kind "human"|"approval"
---@param payload? any what the human is asked (usually the pushed call)
---@return luagent.Thread
function Thread:await(kind, payload) end

---If this step resumes a pause: the awaited payload and the human's answer. A step that
---recovers from a crash inside an idempotent tool gets that call back with
---`{ type = "retry", approved = true }`, so the usual `if answer.approved` runs it again.
---@return any|nil call
---@return luagent.Answer|nil answer
function Thread:resumed() end

---Runs `fn(call)` exactly once for a pushed call and records its result as a
---tool_response. `fn` gets the call as recorded when it was pushed (a fresh table), not
---the agent's own table: a change made to that after the push does not reach the tool,
---whose run must match the record a retry after a crash reads. Called again for the same call it returns the recorded result without
---running `fn`; for a call that started but never finished (a crash) it records
---outcome_unknown and returns nil, "outcome_unknown" — unless the tool is declared
---idempotent (`{ idempotent = true }`): then it simply runs again. A tool error is
---recorded and returned as nil, message. Errors with usage for a call whose tool is still
---running (called again from inside that tool, or while a coroutine running it is
---suspended): its result is recorded once, when the tool returns. A tool still running when
---the step ends (its coroutine closed, or left suspended) is recorded as outcome_unknown.
---@generic R
---@param call table a table passed to thread:push, or the call thread:resumed returned
---@param fn fun(call: table): R
---@param options? { idempotent?: boolean } idempotent: safe to run again after a crash
---@return R|nil result
---@return string|nil error
function Thread:execute(call, fn, options) end

---The thread's status, derived from its events.
---@return luagent.Status
function Thread:status() end
