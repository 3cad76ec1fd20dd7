#include "llm/anthropic_wire.hpp"

#include <utility>

#include "llm/json_schema.hpp"
#include "llm/openai_wire.hpp"
#include "llm/provider_errors.hpp"
#include "llm/tool_arguments.hpp"
#include "llm/wire_json.hpp"

namespace luagent::llm {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxBlocks = 4096;

std::string where(std::size_t i) {
  return "messages[" + std::to_string(i) + "]";
}

// Text of a neutral content value: a string, or the text parts of a block array.
std::string plain_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string text;
  if (content.is_array()) {
    for (const json& part : content) text += string_field(part, "text");
  }
  return text;
}

// A user/tool content value as Anthropic blocks: strings become one text block (none when
// empty: the API rejects empty text blocks), arrays are taken as blocks already.
json content_blocks(const json& message, std::size_t i) {
  const auto it = message.find("content");
  if (it == message.end() || it->is_null()) return json::array();
  if (it->is_array()) return *it;
  if (!it->is_string()) {
    throw Error(ErrorCode::usage, where(i) + ".content must be a string, an array or null");
  }
  if (it->get<std::string>().empty()) return json::array();
  return json::array({{{"type", "text"}, {"text", *it}}});
}

json tool_input(const json& call) {
  const auto it = call.find("arguments");
  if (it == call.end() || it->is_null()) return json::object();
  if (it->is_string()) {
    json parsed = parse_tool_arguments(it->get<std::string>());
    return parsed.is_object() ? parsed : json::object();
  }
  return *it;
}

json assistant_blocks(const json& message, std::size_t i) {
  json blocks = json::array();
  // Thinking blocks must come first and byte-for-byte as received, signatures included.
  if (const auto carried = message.find("carried_blocks"); carried != message.end()) {
    if (!carried->is_array() && !carried->is_null()) {
      throw Error(ErrorCode::usage, where(i) + ".carried_blocks must be an array");
    }
    if (carried->is_array()) {
      for (const json& block : *carried) blocks.push_back(block);
    }
  }
  for (json& block : content_blocks(message, i)) blocks.push_back(std::move(block));
  if (const auto calls = message.find("tool_calls"); calls != message.end() && !calls->is_null()) {
    if (!calls->is_array())
      throw Error(ErrorCode::usage, where(i) + ".tool_calls must be an array");
    for (const json& call : *calls) {
      if (!call.is_object()) {
        throw Error(ErrorCode::usage, where(i) + ".tool_calls[] entries must be objects");
      }
      blocks.push_back({{"type", "tool_use"},
                        {"id", string_field(call, "id")},
                        {"name", string_field(call, "name")},
                        {"input", tool_input(call)}});
    }
  }
  return blocks;
}

json tool_result_block(const json& message, std::size_t i) {
  const auto id = message.find("tool_call_id");
  if (id == message.end() || !id->is_string()) {
    throw Error(ErrorCode::usage, where(i) + ".tool_call_id must be a string");
  }
  json block = {{"type", "tool_result"}, {"tool_use_id", *id}};
  const auto content = message.find("content");
  if (content != message.end() && (content->is_string() || content->is_array())) {
    block["content"] = *content;
  } else if (content != message.end() && !content->is_null()) {
    throw Error(ErrorCode::usage, where(i) + ".content must be a string, an array or null");
  }
  if (const auto is_error = message.find("is_error"); is_error != message.end()) {
    if (!is_error->is_boolean() && !is_error->is_null())
      throw Error(ErrorCode::usage, where(i) + ".is_error must be a boolean");
    if (is_error->is_boolean() && is_error->get<bool>()) block["is_error"] = true;
  }
  return block;
}

json anthropic_tool_choice(const json& choice) {
  if (!choice.is_string()) {
    throw Error(ErrorCode::usage,
                "tool_choice must be \"auto\", \"required\", \"none\" or a tool name");
  }
  const std::string value = choice.get<std::string>();
  if (value == "auto") return {{"type", "auto"}};
  if (value == "required") return {{"type", "any"}};
  if (value == "none") return {{"type", "none"}};
  return {{"type", "tool"}, {"name", value}};
}

std::string anthropic_finish_reason(std::string_view stop_reason, bool has_tool_calls) {
  if (stop_reason == "end_turn" || stop_reason == "stop_sequence") return "stop";
  if (stop_reason == "max_tokens" || stop_reason == "model_context_window_exceeded")
    return "length";
  if (stop_reason == "refusal") return "content_filter";
  // Structured output ends with stop_reason tool_use on the hidden output tool.
  if (stop_reason == "tool_use") return has_tool_calls ? "tool_calls" : "stop";
  return std::string(stop_reason);
}

ToolCall make_call(std::string id, std::string name, std::string raw, bool cut_short) {
  ToolCall call;
  call.id = std::move(id);
  call.name = std::move(name);
  call.arguments = parse_tool_arguments(raw);
  call.raw_arguments = std::move(raw);
  call.truncated = cut_short;
  return call;
}

}  // namespace

std::string anthropic_request_body(const Request& request, const std::string& default_model,
                                   int default_max_tokens) {
  const std::string& model = request.model.empty() ? default_model : request.model;
  if (model.empty())
    throw Error(ErrorCode::usage, "no model given and no default model configured");
  if (!request.messages.is_array()) throw Error(ErrorCode::usage, "messages must be an array");
  const int max_tokens = request.max_tokens.value_or(default_max_tokens);
  if (max_tokens <= 0) throw Error(ErrorCode::usage, "max_tokens must be positive");

  std::string system;
  json messages = json::array();
  // Anthropic alternates roles, so consecutive same-role turns (tool results, a user note
  // after them) are merged into one message.
  auto append = [&messages](const std::string& role, json blocks) {
    if (blocks.empty()) return;
    if (!messages.empty() && messages.back()["role"] == role) {
      for (json& block : blocks) messages.back()["content"].push_back(std::move(block));
    } else {
      messages.push_back({{"role", role}, {"content", std::move(blocks)}});
    }
  };
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    const json& message = request.messages[i];
    if (!message.is_object()) throw Error(ErrorCode::usage, where(i) + " must be an object");
    const std::string role = string_field(message, "role");
    if (role == "system") {
      const std::string text = plain_text(message.value("content", json()));
      if (!text.empty()) system += (system.empty() ? "" : "\n\n") + text;
    } else if (role == "user") {
      append("user", content_blocks(message, i));
    } else if (role == "assistant") {
      append("assistant", assistant_blocks(message, i));
    } else if (role == "tool") {
      append("user", json::array({tool_result_block(message, i)}));
    } else {
      throw Error(ErrorCode::usage,
                  where(i) + ".role must be system, user, assistant or tool, not '" + role + "'");
    }
  }

  json body = {{"model", model}, {"max_tokens", max_tokens}, {"messages", std::move(messages)}};
  if (!system.empty()) body["system"] = system;
  json tools = json::array();
  for (const ToolSpec& tool : request.tools) {
    json spec = {{"name", tool.name}, {"input_schema", tool.parameters}};
    if (!tool.description.empty()) spec["description"] = tool.description;
    tools.push_back(std::move(spec));
  }
  if (!request.tool_choice.is_null())
    body["tool_choice"] = anthropic_tool_choice(request.tool_choice);
  if (request.response_schema) {
    const bool other_tools = !tools.empty();
    tools.push_back({{"name", kAnthropicJsonToolName},
                     {"description", "Give the final answer as this tool's input."},
                     {"input_schema", request.response_schema->json()}});
    // With the caller's tools present the model may still call one of them first.
    body["tool_choice"] = other_tools ? json{{"type", "any"}}
                                      : json{{"type", "tool"}, {"name", kAnthropicJsonToolName}};
  }
  if (!tools.empty()) body["tools"] = std::move(tools);
  if (request.temperature) body["temperature"] = *request.temperature;
  if (request.stream) body["stream"] = true;
  return body.dump();
}

Usage anthropic_usage(const json& usage) {
  Usage out;
  out.cached_tokens = count_field(usage, "cache_read_input_tokens");
  out.input_tokens = count_field(usage, "input_tokens") + out.cached_tokens +
                     count_field(usage, "cache_creation_input_tokens");
  out.output_tokens = count_field(usage, "output_tokens");
  return out;
}

Reply anthropic_parse_response(const json& body) {
  if (!body.is_object()) throw Error(ErrorCode::provider, "message body is not a JSON object");
  if (string_field(body, "type") == "error" || body.contains("error")) {
    throw anthropic_classify_error(200, body.dump());
  }
  const auto content = body.find("content");
  if (content == body.end() || !content->is_array()) {
    throw Error(ErrorCode::provider, "message body has no content array");
  }
  Reply reply;
  reply.model = string_field(body, "model");
  const std::string stop_reason = string_field(body, "stop_reason");
  for (const json& block : *content) {
    const std::string type = string_field(block, "type");
    if (type == "text") {
      reply.text += string_field(block, "text");
    } else if (type == "thinking") {
      reply.reasoning += string_field(block, "thinking");
      reply.carried_blocks.push_back(block);
    } else if (type == "redacted_thinking") {
      reply.carried_blocks.push_back(block);
    } else if (type == "tool_use") {
      const json input = block.value("input", json::object());
      if (string_field(block, "name") == kAnthropicJsonToolName) {
        reply.text += input.dump();
        continue;
      }
      ToolCall call;
      call.id = string_field(block, "id");
      call.name = string_field(block, "name");
      call.arguments = input;
      call.raw_arguments = input.dump();
      reply.tool_calls.push_back(std::move(call));
    }
    // Server tool blocks and future types are not the caller's business: skipped.
  }
  reply.finish_reason = anthropic_finish_reason(stop_reason, !reply.tool_calls.empty());
  reply.usage = anthropic_usage(body.value("usage", json::object()));
  return reply;
}

Error anthropic_classify_error(int http_status, std::string_view body) {
  const json parsed = try_parse_error_body(body);
  const json error = parsed.is_object() ? parsed.value("error", json()) : json();
  if (!error.is_object()) {
    const std::string shown =
        body.empty() ? std::string("(empty body)") : scrub_secrets(body.substr(0, 300));
    return Error(http_status >= 400 ? error_code_for_status(http_status) : ErrorCode::provider,
                 http_status_prefix(http_status) + shown);
  }
  const std::string type = string_field(error, "type");
  const std::string message = string_field(error, "message");
  ErrorCode code;
  if (type == "rate_limit_error") {
    code = ErrorCode::rate_limited;
  } else if (type == "overloaded_error") {
    code = ErrorCode::overloaded;
  } else if (type == "authentication_error" || type == "permission_error" ||
             type == "billing_error") {
    code = ErrorCode::auth;
  } else if (type == "timeout_error") {
    code = ErrorCode::timeout;
  } else if (type == "invalid_request_error" || type == "request_too_large" ||
             type == "not_found_error") {
    // An unknown model is a mistake in the call, like any other bad parameter: bad_request.
    const bool too_long = message.find("prompt is too long") != std::string::npos ||
                          message.find("exceed context limit") != std::string::npos ||
                          message.find("context window") != std::string::npos;
    code = too_long ? ErrorCode::context_length_exceeded : ErrorCode::bad_request;
  } else if (type == "api_error") {
    code = ErrorCode::provider;
  } else if (http_status >= 400) {
    code = error_code_for_status(http_status);
  } else {
    code = ErrorCode::provider;
  }
  std::string text = http_status_prefix(http_status);
  if (http_status < 300) text += "error in stream: ";
  text += (type.empty() ? std::string("error") : type) + ": " +
          (message.empty() ? std::string("(no message)") : message);
  if (const std::string request_id = string_field(parsed, "request_id"); !request_id.empty()) {
    text += " (request_id " + request_id + ")";
  }
  return Error(code, scrub_secrets(text));
}

AnthropicStreamDecoder::AnthropicStreamDecoder(ChunkCallback on_chunk)
    : on_chunk_(std::move(on_chunk)) {}

AnthropicStreamDecoder::~AnthropicStreamDecoder() = default;

void AnthropicStreamDecoder::feed(std::string_view bytes) {
  if (!sse_) sse_ = std::make_unique<SseParser>([this](const SseEvent& e) { on_event(e); });
  sse_->feed(bytes);
}

void AnthropicStreamDecoder::end_of_body() {
  if (sse_) sse_->finish();
}

void AnthropicStreamDecoder::on_event(const SseEvent& event) {
  if (done_) return;
  if (event.event == "error") throw anthropic_classify_error(200, event.data);
  if (event.data.find_first_not_of(" \t\r\n") == std::string::npos) return;
  const json data = parse_wire_json(event.data, "message stream");
  if (!data.is_object()) throw Error(ErrorCode::provider, "stream event data is not a JSON object");
  apply(data);
}

void AnthropicStreamDecoder::apply(const json& event) {
  // The data's own type is authoritative; the SSE event name only repeats it.
  const std::string type = string_field(event, "type");
  if (type == "error") throw anthropic_classify_error(200, event.dump());
  if (type == "message_start") {
    const json message = event.value("message", json::object());
    reply_.model = string_field(message, "model");
    if (const auto usage = message.find("usage"); usage != message.end() && usage->is_object()) {
      usage_.update(*usage);
    }
    return;
  }
  if (type == "message_delta") {
    const json delta = event.value("delta", json::object());
    if (const std::string stop = string_field(delta, "stop_reason"); !stop.empty())
      stop_reason_ = stop;
    // Cumulative counts: each field's latest value replaces the earlier one.
    if (const auto usage = event.find("usage"); usage != event.end() && usage->is_object()) {
      usage_.update(*usage);
    }
    return;
  }
  if (type == "message_stop") {
    done_ = true;
    return;
  }
  if (type != "content_block_start" && type != "content_block_delta" &&
      type != "content_block_stop") {
    return;  // ping and event types this decoder does not know
  }
  const auto index_it = event.find("index");
  if (index_it == event.end() || !index_it->is_number_integer()) {
    throw Error(ErrorCode::provider, type + " event without an integer index");
  }
  const std::int64_t index = index_it->get<std::int64_t>();
  if (type == "content_block_start") {
    if (!blocks_.contains(index) && blocks_.size() >= kMaxBlocks) {
      throw Error(ErrorCode::limit,
                  "stream opened more than " + std::to_string(kMaxBlocks) + " blocks");
    }
    const json start = event.value("content_block", json::object());
    Block& block = blocks_[index];
    block = Block{};
    block.type = string_field(start, "type");
    block.id = string_field(start, "id");
    block.name = string_field(start, "name");
    if (block.type == "text") {
      emit_text(string_field(start, "text"));
    } else if (block.type == "thinking") {
      block.thinking = string_field(start, "thinking");
      block.signature = string_field(start, "signature");
      emit_reasoning(block.thinking);
    } else if (block.type == "redacted_thinking") {
      count_bytes(string_field(start, "data").size());
      block.whole = start;
    }
    return;
  }
  const auto found = blocks_.find(index);
  if (found == blocks_.end()) return;  // a delta for a block never started: nothing to add to
  Block& block = found->second;
  if (type == "content_block_stop") {
    block.stopped = true;
    return;
  }
  apply_delta(block, event.value("delta", json::object()));
}

void AnthropicStreamDecoder::apply_delta(Block& block, const json& delta) {
  const std::string type = string_field(delta, "type");
  if (type == "text_delta" && block.type == "text") {
    emit_text(string_field(delta, "text"));
  } else if (type == "thinking_delta" && block.type == "thinking") {
    const std::string piece = string_field(delta, "thinking");
    block.thinking += piece;
    emit_reasoning(piece);
  } else if (type == "signature_delta" && block.type == "thinking") {
    const std::string piece = string_field(delta, "signature");
    count_bytes(piece.size());
    block.signature += piece;
  } else if (type == "input_json_delta" && block.type == "tool_use") {
    const std::string piece = string_field(delta, "partial_json");
    count_bytes(piece.size());
    block.input_json += piece;
    // Structured output streams like OpenAI JSON content does.
    if (block.name == kAnthropicJsonToolName && on_chunk_ && !piece.empty()) {
      StreamChunk chunk;
      chunk.text_delta = piece;
      on_chunk_(chunk);
    }
  }
  // Deltas of server tools and unknown delta types are skipped.
}

void AnthropicStreamDecoder::emit_text(const std::string& text) {
  if (text.empty()) return;
  count_bytes(text.size());
  reply_.text += text;
  if (on_chunk_) {
    StreamChunk chunk;
    chunk.text_delta = text;
    on_chunk_(chunk);
  }
}

void AnthropicStreamDecoder::emit_reasoning(const std::string& text) {
  if (text.empty()) return;
  count_bytes(text.size());
  reply_.reasoning += text;
  if (on_chunk_) {
    StreamChunk chunk;
    chunk.reasoning_delta = text;
    on_chunk_(chunk);
  }
}

void AnthropicStreamDecoder::count_bytes(std::size_t n) {
  accumulated_bytes_ += n;
  if (accumulated_bytes_ > kMaxReplyBytes) {
    throw Error(ErrorCode::limit,
                "streamed reply larger than " + std::to_string(kMaxReplyBytes) + " bytes");
  }
}

Reply AnthropicStreamDecoder::take_reply() {
  Reply reply = std::move(reply_);
  reply_ = Reply{};
  for (auto& [index, block] : blocks_) {
    if (block.type == "thinking") {
      reply.carried_blocks.push_back(
          {{"type", "thinking"}, {"thinking", block.thinking}, {"signature", block.signature}});
    } else if (block.type == "redacted_thinking") {
      reply.carried_blocks.push_back(std::move(block.whole));
    } else if (block.type == "tool_use") {
      if (block.name == kAnthropicJsonToolName) {
        reply.text += block.input_json.empty() ? std::string("{}") : block.input_json;
        continue;
      }
      // Without content_block_stop (max_tokens hit mid-input) the JSON is only a prefix.
      reply.tool_calls.push_back(make_call(std::move(block.id), std::move(block.name),
                                           std::move(block.input_json), !block.stopped));
    }
  }
  blocks_.clear();
  reply.usage = anthropic_usage(usage_);
  reply.finish_reason = anthropic_finish_reason(stop_reason_, !reply.tool_calls.empty());
  return reply;
}

}  // namespace luagent::llm
