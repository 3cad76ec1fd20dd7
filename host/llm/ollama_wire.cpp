#include "llm/ollama_wire.hpp"

#include <map>
#include <utility>

#include "llm/json_schema.hpp"
#include "llm/openai_wire.hpp"
#include "llm/provider_errors.hpp"
#include "llm/tool_arguments.hpp"
#include "llm/wire_json.hpp"

namespace luagent::llm {
namespace {

using nlohmann::json;

std::string where(std::size_t i) {
  return "messages[" + std::to_string(i) + "]";
}

std::string content_string(const json& message, std::size_t i) {
  const auto it = message.find("content");
  if (it == message.end() || it->is_null()) return {};
  if (!it->is_string())
    throw Error(ErrorCode::usage, where(i) + ".content must be a string or null");
  return it->get<std::string>();
}

// Ollama's tool calls carry arguments as an object and, in older versions, no id: ids are
// made up so that a neutral tool message can still point at its call.
void append_tool_calls(Reply& reply, const json& message) {
  const auto calls = message.find("tool_calls");
  if (calls == message.end() || !calls->is_array()) return;
  for (const json& call : *calls) {
    if (reply.tool_calls.size() >= kMaxToolCalls) {
      throw Error(ErrorCode::limit,
                  "reply has more than " + std::to_string(kMaxToolCalls) + " tool calls");
    }
    // A `function` that is not an object (or a call that is not) names no tool: the call
    // reaches the agent nameless, as one without `function` does.
    const auto found = call.is_object() ? call.find("function") : call.end();
    const json function = found != call.end() && found->is_object() ? *found : json::object();
    ToolCall out;
    out.id = string_field(call, "id");
    if (out.id.empty()) out.id = "ollama_call_" + std::to_string(reply.tool_calls.size());
    out.name = string_field(function, "name");
    const json args = function.value("arguments", json::object());
    if (args.is_string()) {
      out.raw_arguments = args.get<std::string>();
      out.arguments = parse_tool_arguments(out.raw_arguments);
    } else {
      out.arguments = args;
      out.raw_arguments = args.dump();
    }
    reply.tool_calls.push_back(std::move(out));
  }
}

Usage ollama_usage(const json& body) {
  Usage usage;
  usage.input_tokens = count_field(body, "prompt_eval_count");
  usage.output_tokens = count_field(body, "eval_count");
  return usage;
}

}  // namespace

std::string ollama_request_body(const Request& request, const std::string& default_model) {
  const std::string& model = request.model.empty() ? default_model : request.model;
  if (model.empty())
    throw Error(ErrorCode::usage, "no model given and no default model configured");
  if (!request.messages.is_array()) throw Error(ErrorCode::usage, "messages must be an array");
  json messages = json::array();
  std::map<std::string, std::string> tool_names;  // tool_call_id -> name, for tool results
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    const json& message = request.messages[i];
    if (!message.is_object()) throw Error(ErrorCode::usage, where(i) + " must be an object");
    const std::string role = string_field(message, "role");
    json out = {{"role", role}, {"content", content_string(message, i)}};
    if (role == "assistant") {
      if (const auto calls = message.find("tool_calls");
          calls != message.end() && calls->is_array()) {
        json wire_calls = json::array();
        for (const json& call : *calls) {
          if (!call.is_object()) {
            throw Error(ErrorCode::usage, where(i) + ".tool_calls[] entries must be objects");
          }
          json args = call.value("arguments", json::object());
          if (args.is_string()) args = parse_tool_arguments(args.get<std::string>());
          if (!args.is_object()) args = json::object();
          tool_names[string_field(call, "id")] = string_field(call, "name");
          wire_calls.push_back(
              {{"function", {{"name", string_field(call, "name")}, {"arguments", args}}}});
        }
        if (!wire_calls.empty()) out["tool_calls"] = std::move(wire_calls);
      }
    } else if (role == "tool") {
      // Ollama matches results to calls by tool name, not id.
      const auto name = tool_names.find(string_field(message, "tool_call_id"));
      if (name != tool_names.end()) out["tool_name"] = name->second;
    } else if (role != "system" && role != "user") {
      throw Error(ErrorCode::usage,
                  where(i) + ".role must be system, user, assistant or tool, not '" + role + "'");
    }
    messages.push_back(std::move(out));
  }
  json body = {{"model", model}, {"messages", std::move(messages)}, {"stream", request.stream}};
  if (!request.tools.empty()) {
    json tools = json::array();
    for (const ToolSpec& tool : request.tools) {
      tools.push_back({{"type", "function"},
                       {"function",
                        {{"name", tool.name},
                         {"description", tool.description},
                         {"parameters", tool.parameters}}}});
    }
    body["tools"] = std::move(tools);
  }
  if (request.response_schema) body["format"] = request.response_schema->json();
  json options = json::object();
  if (request.temperature) options["temperature"] = *request.temperature;
  if (request.max_tokens) options["num_predict"] = *request.max_tokens;
  if (!options.empty()) body["options"] = std::move(options);
  return body.dump();
}

Reply ollama_parse_response(const json& body) {
  if (!body.is_object()) throw Error(ErrorCode::provider, "/api/chat body is not a JSON object");
  if (body.contains("error")) throw ollama_classify_error(200, body.dump());
  const auto message = body.find("message");
  if (message == body.end() || !message->is_object()) {
    throw Error(ErrorCode::provider, "/api/chat body has no message");
  }
  Reply reply;
  reply.model = string_field(body, "model");
  reply.text = string_field(*message, "content");
  reply.reasoning = string_field(*message, "thinking");
  append_tool_calls(reply, *message);
  reply.finish_reason =
      openai_finish_reason(string_field(body, "done_reason"), !reply.tool_calls.empty());
  if (reply.finish_reason.empty() && flag_field(body, "done")) reply.finish_reason = "stop";
  reply.usage = ollama_usage(body);
  return reply;
}

Error ollama_classify_error(int http_status, std::string_view body) {
  const json parsed = try_parse_error_body(body);
  std::string message;
  if (parsed.is_object()) {
    const json error = parsed.value("error", json());
    message = error.is_string() ? error.get<std::string>() : error.is_null() ? "" : error.dump();
  }
  if (message.empty())
    message = body.empty() ? std::string("(empty body)") : std::string(body.substr(0, 300));
  ErrorCode code = http_status >= 400 ? error_code_for_status(http_status) : ErrorCode::provider;
  if (message.find("context length") != std::string::npos ||
      message.find("context window") != std::string::npos) {
    code = ErrorCode::context_length_exceeded;
  }
  std::string text = http_status_prefix(http_status);
  if (http_status < 300) text += "error in stream: ";
  return Error(code, scrub_secrets(text + message));
}

OllamaStreamDecoder::OllamaStreamDecoder(ChunkCallback on_chunk) : on_chunk_(std::move(on_chunk)) {}

OllamaStreamDecoder::~OllamaStreamDecoder() = default;

void OllamaStreamDecoder::feed(std::string_view bytes) {
  if (!ndjson_)
    ndjson_ = std::make_unique<NdjsonParser>([this](const json& line) { on_line(line); });
  ndjson_->feed(bytes);
}

void OllamaStreamDecoder::end_of_body() {
  if (ndjson_) ndjson_->finish();
}

void OllamaStreamDecoder::on_line(const json& line) {
  if (done_) return;
  if (!line.is_object()) throw Error(ErrorCode::provider, "NDJSON stream line is not an object");
  if (line.contains("error")) throw ollama_classify_error(200, line.dump());
  if (reply_.model.empty()) reply_.model = string_field(line, "model");
  StreamChunk chunk;
  if (const auto message = line.find("message"); message != line.end() && message->is_object()) {
    chunk.text_delta = string_field(*message, "content");
    chunk.reasoning_delta = string_field(*message, "thinking");
    append_tool_calls(reply_, *message);
  }
  chunk.text_delta += string_field(line, "response");  // /api/generate streams say "response"
  accumulated_bytes_ += chunk.text_delta.size() + chunk.reasoning_delta.size();
  if (accumulated_bytes_ > kMaxReplyBytes) {
    throw Error(ErrorCode::limit,
                "streamed reply larger than " + std::to_string(kMaxReplyBytes) + " bytes");
  }
  reply_.text += chunk.text_delta;
  reply_.reasoning += chunk.reasoning_delta;
  if (on_chunk_ && (!chunk.text_delta.empty() || !chunk.reasoning_delta.empty())) on_chunk_(chunk);
  if (flag_field(line, "done")) {
    done_ = true;
    done_reason_ = string_field(line, "done_reason");
    if (done_reason_.empty()) done_reason_ = "stop";
    reply_.usage = ollama_usage(line);
  }
}

Reply OllamaStreamDecoder::take_reply() {
  Reply reply = std::move(reply_);
  reply_ = Reply{};
  reply.finish_reason = openai_finish_reason(done_reason_, !reply.tool_calls.empty());
  return reply;
}

}  // namespace luagent::llm
