---@meta luagent.llm
-- luagent.llm: LLM calls. Each call suspends only the calling coroutine; one made where
-- the step cannot wait (table.sort's comparator, string.gsub's replacement, a __tostring,
-- a module's top level) is refused with usage before it starts.
-- Errors are tables { code = "invalid_output" | "rate_limited" | ..., message = ... }.
local llm = {}

---@class luagent.llm.Options
---@field model? string
---@field temperature? number in [0, 2]
---@field max_tokens? integer in [1, 10000000]
---@field timeout? number seconds, positive (rounded up to whole milliseconds; at most 2147483)
---@field stream? fun(delta: string, partial: table|nil) called as text arrives; for llm.json `partial` is the object parsed so far. Its errors are logged, not raised; its CPU counts toward the step's limit

---@class luagent.llm.ChatOptions: luagent.llm.Options
---@field tools? table<string, { description: string, parameters: table }> native tool calling; parameters in short form or JSON Schema
---@field tool_choice? "auto"|"required"|"none"|string

---@class luagent.llm.ToolCall
---@field id string
---@field name string
---@field arguments table

---@class luagent.llm.Usage
---@field input_tokens integer
---@field output_tokens integer
---@field cached_tokens integer
---@field reasoning_tokens integer

---@class luagent.llm.ChatReply
---@field text string
---@field tool_calls luagent.llm.ToolCall[]
---@field finish_reason string "stop", "length", "tool_calls", ...
---@field model string
---@field usage luagent.llm.Usage
---@field refusal? string

---@class luagent.llm.Message
---@field role "system"|"user"|"assistant"|"tool"
---@field content string

---Asks for a JSON reply and returns it as a Lua value, repaired leniently (fences, prose,
---trailing commas, ...) and validated against `schema`: a table for an object schema; without
---a schema, whatever JSON value the model gave (a table, string, number or boolean).
---@param prompt string|luagent.llm.Message[]
---@param schema? table|luagent.llm.Schema short form ({ a = "number" }), JSON Schema, or llm.one_of(...)
---@param opts? luagent.llm.Options
---@return any
function llm.json(prompt, schema, opts) end

---Asks for free text.
---@param prompt string|luagent.llm.Message[]
---@param opts? luagent.llm.Options
---@return string
function llm.text(prompt, opts) end

---A chat turn with native tool calling.
---@param messages luagent.llm.Message[] { role =, content = } (assistant turns may carry tool_calls; tool turns tool_call_id)
---@param opts? luagent.llm.ChatOptions
---@return luagent.llm.ChatReply
function llm.chat(messages, opts) end

---A compiled schema: built once, reused by every call that passes it.
---@class luagent.llm.Schema
local Schema = {}
---The JSON Schema it stands for, as a table.
---@return table
function Schema:json() end

---A schema for "one of these intents": each reply is { intent = NAME, ...fields }.
---Cached by content, so calling it every step costs little; a table changed between
---calls gives the schema of what it holds now.
---@param intents table<string, table> intent name -> short-form fields
---@return luagent.llm.Schema
function llm.one_of(intents) end

---Compiles a short-form or JSON Schema table once (llm.json does this itself, per table,
---and compiles a table again when its content has changed since).
---@param schema table
---@return luagent.llm.Schema
function llm.schema(schema) end

return llm
