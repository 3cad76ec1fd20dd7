---@meta luagent.llm
-- luagent.llm: LLM calls. Each call suspends only the calling coroutine.
-- Errors are tables { code = "invalid_output" | "rate_limited" | ..., message = ... }.
local llm = {}

---@class luagent.llm.Options
---@field model? string
---@field temperature? number
---@field max_tokens? integer
---@field timeout? number seconds

---@class luagent.llm.Message
---@field role "system"|"user"|"assistant"|"tool"
---@field content string

---Asks for a JSON reply and returns it as a table, repaired leniently (fences, prose,
---trailing commas, ...) and validated against `schema`.
---@param prompt string|luagent.llm.Message[]
---@param schema? table short form ({ a = "number" }) or JSON Schema, or llm.one_of(...)
---@param opts? luagent.llm.Options
---@return table
function llm.json(prompt, schema, opts) end

---Asks for free text.
---@param prompt string|luagent.llm.Message[]
---@param opts? luagent.llm.Options
---@return string
function llm.text(prompt, opts) end

---A schema for "one of these intents": each reply is { intent = NAME, ...fields }.
---@param intents table<string, table> intent name -> short-form fields
---@return table schema
function llm.one_of(intents) end

return llm
