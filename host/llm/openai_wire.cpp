#include "llm/openai_wire.hpp"

#include <utility>

#include "llm/json_schema.hpp"
#include "llm/provider_errors.hpp"
#include "llm/tool_arguments.hpp"
#include "llm/wire_json.hpp"

namespace luagent::llm {
namespace {

using nlohmann::json;

std::string where(std::size_t i) {
  return "messages[" + std::to_string(i) + "]";
}

std::string required_string(const json& message, const char* key, std::size_t i) {
  const auto it = message.find(key);
  if (it == message.end() || !it->is_string()) {
    throw Error(ErrorCode::usage, where(i) + "." + key + " must be a string");
  }
  return it->get<std::string>();
}

// Content passes through when it is a string, null, or an array of content parts.
json message_content(const json& message, std::size_t i) {
  const auto it = message.find("content");
  if (it == message.end() || it->is_null()) return nullptr;
  if (it->is_string() || it->is_array()) return *it;
  throw Error(ErrorCode::usage, where(i) + ".content must be a string, an array or null");
}

// Neutral arguments are a JSON value; a string is taken as already-serialised JSON text.
std::string arguments_text(const json& call) {
  const auto it = call.find("arguments");
  if (it == call.end() || it->is_null()) return "{}";
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

json openai_message(const json& message, std::size_t i) {
  if (!message.is_object()) throw Error(ErrorCode::usage, where(i) + " must be an object");
  const std::string role = required_string(message, "role", i);
  json out = {{"role", role}};
  if (role == "system" || role == "user") {
    out["content"] = message_content(message, i);
    if (out["content"].is_null()) out["content"] = "";
  } else if (role == "assistant") {
    json content = message_content(message, i);
    const auto calls = message.find("tool_calls");
    const bool has_calls = calls != message.end() && calls->is_array() && !calls->empty();
    // OpenAI wants content null (not "") beside tool calls; plain answers need a string.
    if (content.is_string() && content.get<std::string>().empty() && has_calls) content = nullptr;
    if (content.is_null() && !has_calls) content = "";
    out["content"] = content;
    if (calls != message.end() && !calls->is_null()) {
      if (!calls->is_array())
        throw Error(ErrorCode::usage, where(i) + ".tool_calls must be an array");
      json wire_calls = json::array();
      for (const json& call : *calls) {
        if (!call.is_object()) {
          throw Error(ErrorCode::usage, where(i) + ".tool_calls[] entries must be objects");
        }
        wire_calls.push_back(
            {{"id", string_field(call, "id")},
             {"type", "function"},
             {"function",
              {{"name", string_field(call, "name")}, {"arguments", arguments_text(call)}}}});
      }
      if (!wire_calls.empty()) out["tool_calls"] = std::move(wire_calls);
    }
  } else if (role == "tool") {
    out["tool_call_id"] = required_string(message, "tool_call_id", i);
    json content = message_content(message, i);
    out["content"] = content.is_null() ? json("") : content;
  } else {
    throw Error(ErrorCode::usage,
                where(i) + ".role must be system, user, assistant or tool, not '" + role + "'");
  }
  return out;
}

json openai_tool_choice(const json& choice) {
  if (!choice.is_string()) {
    throw Error(ErrorCode::usage,
                "tool_choice must be \"auto\", \"required\", \"none\" or a tool name");
  }
  const std::string value = choice.get<std::string>();
  if (value == "auto" || value == "required" || value == "none") return value;
  return {{"type", "function"}, {"function", {{"name", value}}}};
}

// Content is a string on OpenAI; some compatible servers send an array of {type:text,text}.
std::string content_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string text;
  if (content.is_array()) {
    for (const json& part : content) text += string_field(part, "text");
  }
  return text;
}

std::string reasoning_text(const json& message) {
  // Ollama /v1 and Groq say "reasoning", llama.cpp and vLLM "reasoning_content".
  return string_field(message, "reasoning") + string_field(message, "reasoning_content");
}

ToolCall finished_call(std::string id, std::string name, std::string raw, bool cut_short) {
  ToolCall call;
  call.id = std::move(id);
  call.name = std::move(name);
  call.arguments = parse_tool_arguments(raw);
  call.raw_arguments = std::move(raw);
  call.truncated = cut_short && call.arguments.is_null();
  return call;
}

}  // namespace

// The body is written member by member rather than built as one tree and dumped: the tree
// would deep-copy the response schema (dozens of nodes for llm.one_of) on every call.
// Members come in sorted key order, so the text is byte for byte what nlohmann's
// std::map-ordered dump of the same tree would be.
std::string openai_request_body(const Request& request, const std::string& default_model) {
  const std::string& model = request.model.empty() ? default_model : request.model;
  if (model.empty())
    throw Error(ErrorCode::usage, "no model given and no default model configured");
  if (!request.messages.is_array()) throw Error(ErrorCode::usage, "messages must be an array");
  json messages = json::array();
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    messages.push_back(openai_message(request.messages[i], i));
  }
  std::string body = "{";
  auto member = [&body](std::string_view key) -> std::string& {
    if (body.size() > 1) body += ',';
    body += '"';
    body += key;
    body += "\":";
    return body;
  };
  if (request.max_tokens) member("max_tokens") += json(*request.max_tokens).dump();
  member("messages") += messages.dump();
  member("model") += json(model).dump();
  if (request.response_schema) {
    // strict:false: strict mode rejects ordinary schemas (optional properties, no
    // additionalProperties:false); the reply is validated by luagent anyway.
    member("response_format") += R"({"json_schema":{"name":"output","schema":)";
    const std::string* schema_text = request.response_schema->text();
    body += schema_text ? *schema_text : request.response_schema->json().dump();
    body += R"(,"strict":false},"type":"json_schema"})";
  }
  if (request.stream) {
    member("stream") += "true";
    member("stream_options") += R"({"include_usage":true})";
  }
  if (request.temperature) member("temperature") += json(*request.temperature).dump();
  if (!request.tool_choice.is_null())
    member("tool_choice") += openai_tool_choice(request.tool_choice).dump();
  if (!request.tools.empty()) {
    json tools = json::array();
    for (const ToolSpec& tool : request.tools) {
      tools.push_back({{"type", "function"},
                       {"function",
                        {{"name", tool.name},
                         {"description", tool.description},
                         {"parameters", tool.parameters}}}});
    }
    member("tools") += tools.dump();
  }
  body += '}';
  return body;
}

Usage openai_usage(const json& usage, const json& timings) {
  Usage out;
  if (usage.is_object()) {
    out.input_tokens = count_field(usage, "prompt_tokens");
    out.output_tokens = count_field(usage, "completion_tokens");
    if (const auto it = usage.find("prompt_tokens_details"); it != usage.end()) {
      out.cached_tokens = count_field(*it, "cached_tokens");
    }
    if (const auto it = usage.find("completion_tokens_details"); it != usage.end()) {
      out.reasoning_tokens = count_field(*it, "reasoning_tokens");
    }
  } else if (timings.is_object()) {
    // llama.cpp: prompt_n counts only the evaluated prompt tokens, cache_n the reused ones.
    out.cached_tokens = count_field(timings, "cache_n");
    out.input_tokens = count_field(timings, "prompt_n") + out.cached_tokens;
    out.output_tokens = count_field(timings, "predicted_n");
  }
  return out;
}

std::string openai_finish_reason(std::string_view reason, bool has_tool_calls) {
  if (reason == "function_call") return "tool_calls";
  // Ollama says "stop" after a tool call and OpenAI does so for a forced function; callers
  // branch on "tool_calls", so report what the reply holds.
  if (has_tool_calls && (reason == "stop" || reason.empty())) return "tool_calls";
  return std::string(reason);
}

Reply openai_parse_response(const json& body) {
  if (!body.is_object())
    throw Error(ErrorCode::provider, "chat completion body is not a JSON object");
  if (body.contains("error")) throw openai_classify_error(200, body.dump());
  const auto choices = body.find("choices");
  if (choices == body.end() || !choices->is_array()) {
    throw Error(ErrorCode::provider, "chat completion body has no choices array");
  }
  const json* choice = nullptr;
  for (const json& candidate : *choices) {
    if (!candidate.is_object()) continue;
    const auto index = candidate.find("index");
    if (index == candidate.end() ||
        (index->is_number_integer() && index->get<std::int64_t>() == 0)) {
      choice = &candidate;
      break;
    }
  }
  if (choice == nullptr) throw Error(ErrorCode::provider, "chat completion body has no choice 0");
  const auto message_it = choice->find("message");
  const json message = message_it == choice->end() ? json::object() : *message_it;

  Reply reply;
  reply.model = string_field(body, "model");
  if (const auto it = message.find("content"); it != message.end()) reply.text = content_text(*it);
  reply.refusal = string_field(message, "refusal");
  reply.reasoning = reasoning_text(message);
  const std::string finish = string_field(*choice, "finish_reason");
  if (const auto calls = message.find("tool_calls"); calls != message.end() && calls->is_array()) {
    for (const json& call : *calls) {
      if (!call.is_object()) continue;
      const json function = call.value("function", json::object());
      std::string raw;
      if (const auto args = function.find("arguments"); args != function.end()) {
        raw = args->is_string() ? args->get<std::string>() : args->dump();
      }
      reply.tool_calls.push_back(finished_call(string_field(call, "id"),
                                               string_field(function, "name"), std::move(raw),
                                               finish == "length"));
    }
  }
  reply.finish_reason = openai_finish_reason(finish, !reply.tool_calls.empty());
  reply.usage = openai_usage(body.value("usage", json()), body.value("timings", json()));
  return reply;
}

Error openai_classify_error(int http_status, std::string_view body) {
  const json parsed = try_parse_error_body(body);
  const json error = parsed.is_object() ? parsed.value("error", json()) : json();
  if (error.is_null()) {
    const std::string shown =
        body.empty() ? std::string("(empty body)") : scrub_secrets(body.substr(0, 300));
    return Error(http_status >= 400 ? error_code_for_status(http_status) : ErrorCode::provider,
                 http_status_prefix(http_status) + shown);
  }
  std::string message;
  std::string type;
  std::string code;
  std::string param;
  int status = http_status;
  if (error.is_string()) {
    message = error.get<std::string>();
  } else if (error.is_object()) {
    message = string_field(error, "message");
    type = string_field(error, "type");
    param = string_field(error, "param");
    if (const auto it = error.find("code"); it != error.end()) {
      code = it->is_string() ? it->get<std::string>() : it->is_number() ? it->dump() : "";
    }
    // Groq and others put the would-be HTTP status inside errors sent in a 200 stream.
    if (status < 400) {
      const std::int64_t inner = count_field(error, "status_code");
      if (inner >= 400 && inner < 600) status = static_cast<int>(inner);
    }
  }

  ErrorCode result;
  if (code == "context_length_exceeded" ||
      message.find("maximum context length") != std::string::npos) {
    result = ErrorCode::context_length_exceeded;
  } else if (code == "invalid_api_key" || type == "authentication_error") {
    result = ErrorCode::auth;
  } else if (code == "rate_limit_exceeded" || code == "insufficient_quota" ||
             type == "insufficient_quota" || type == "tokens" || type == "requests") {
    result = ErrorCode::rate_limited;
  } else if (code == "model_not_found" || code == "unsupported_value" || code == "invalid_value" ||
             code == "unsupported_parameter") {
    // An unknown model is a mistake in the call, like any other bad parameter: bad_request.
    result = ErrorCode::bad_request;
  } else if (status >= 400) {
    result = error_code_for_status(status);
  } else if (type == "server_error") {
    result = ErrorCode::provider;
  } else if (type == "invalid_request_error") {
    result = ErrorCode::bad_request;
  } else {
    result = ErrorCode::provider;
  }

  std::string text = http_status_prefix(http_status);
  if (http_status < 300) text += "error in stream: ";
  if (!type.empty() || !code.empty()) {
    text += type;
    if (!code.empty()) text += (type.empty() ? "" : "/") + code;
    text += ": ";
  }
  text += message.empty() ? std::string("(no message)") : message;
  if (!param.empty()) text += " (param " + param + ")";
  return Error(result, scrub_secrets(text));
}

OpenAiStreamDecoder::OpenAiStreamDecoder(ChunkCallback on_chunk) : on_chunk_(std::move(on_chunk)) {}

OpenAiStreamDecoder::~OpenAiStreamDecoder() = default;

void OpenAiStreamDecoder::feed(std::string_view bytes) {
  if (!sse_) sse_ = std::make_unique<SseParser>([this](const SseEvent& e) { on_event(e); });
  sse_->feed(bytes);
}

void OpenAiStreamDecoder::end_of_body() {
  if (sse_) sse_->finish();
}

void OpenAiStreamDecoder::on_event(const SseEvent& event) {
  if (done_) return;  // nothing after [DONE] belongs to this reply
  const std::string_view data = event.data;
  if (event.event == "error") throw openai_classify_error(200, data);
  if (data.find_first_not_of(" \t\r\n") == std::string_view::npos) return;
  if (data == "[DONE]") {
    done_ = true;
    return;
  }
  const json chunk = parse_wire_json(data, "chat completion stream");
  if (!chunk.is_object()) throw Error(ErrorCode::provider, "stream chunk is not a JSON object");
  if (chunk.contains("error")) throw openai_classify_error(200, data);
  apply_chunk(chunk);
}

void OpenAiStreamDecoder::apply_chunk(const json& chunk) {
  if (reply_.model.empty()) reply_.model = string_field(chunk, "model");
  // Usage may come on every chunk (vLLM, cumulative), on the finish chunk (llama.cpp) or on
  // a final chunk with choices:[] (OpenAI include_usage); the last non-null one wins.
  if (const auto usage = chunk.find("usage"); usage != chunk.end() && usage->is_object()) {
    reply_.usage = openai_usage(*usage);
    saw_usage_ = true;
  }
  if (const auto timings = chunk.find("timings"); timings != chunk.end() && timings->is_object()) {
    timings_ = *timings;
  }
  const auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array()) return;
  for (const json& choice : *choices) {
    if (!choice.is_object()) continue;
    // With n>1 choices interleave; the Reply describes choice 0 only.
    const auto index = choice.find("index");
    if (index != choice.end() && !(index->is_number_integer() && index->get<std::int64_t>() == 0)) {
      continue;
    }
    if (const auto delta = choice.find("delta"); delta != choice.end() && delta->is_object()) {
      if (const auto it = delta->find("content"); it != delta->end()) {
        emit(&StreamChunk::text_delta, content_text(*it));
      }
      emit(&StreamChunk::refusal_delta, string_field(*delta, "refusal"));
      emit(&StreamChunk::reasoning_delta, reasoning_text(*delta));
      if (const auto calls = delta->find("tool_calls");
          calls != delta->end() && calls->is_array()) {
        for (const json& call : *calls) {
          if (call.is_object()) apply_tool_call_delta(call);
        }
      }
    }
    const std::string finish = string_field(choice, "finish_reason");
    if (!finish.empty()) finish_reason_ = finish;
  }
}

void OpenAiStreamDecoder::apply_tool_call_delta(const json& delta) {
  std::int64_t index;
  if (const auto it = delta.find("index"); it != delta.end() && it->is_number_integer()) {
    index = it->get<std::int64_t>();
  } else {
    // No index (non-conforming server): a delta with a new id opens a call, others continue.
    const std::string id = string_field(delta, "id");
    const bool continues = !calls_.empty() && (id.empty() || calls_.rbegin()->second.id == id);
    index = continues ? calls_.rbegin()->first : (calls_.empty() ? 0 : calls_.rbegin()->first + 1);
  }
  if (!calls_.contains(index) && calls_.size() >= kMaxToolCalls) {
    throw Error(ErrorCode::limit,
                "stream opened more than " + std::to_string(kMaxToolCalls) + " tool calls");
  }
  PartialCall& call = calls_[index];
  if (const std::string id = string_field(delta, "id"); !id.empty()) call.id = id;
  const auto function = delta.find("function");
  if (function == delta.end() || !function->is_object()) return;
  if (const std::string name = string_field(*function, "name"); !name.empty()) call.name = name;
  if (const auto args = function->find("arguments"); args != function->end()) {
    const std::string piece = args->is_string() ? args->get<std::string>()
                              : args->is_null() ? std::string()
                                                : args->dump();
    count_bytes(piece.size());
    call.arguments += piece;
  }
}

void OpenAiStreamDecoder::emit(std::string StreamChunk::*field, const std::string& text) {
  if (text.empty()) return;
  count_bytes(text.size());
  if (field == &StreamChunk::text_delta) reply_.text += text;
  if (field == &StreamChunk::refusal_delta) reply_.refusal += text;
  if (field == &StreamChunk::reasoning_delta) reply_.reasoning += text;
  if (on_chunk_) {
    StreamChunk chunk;
    chunk.*field = text;
    on_chunk_(chunk);
  }
}

void OpenAiStreamDecoder::count_bytes(std::size_t n) {
  accumulated_bytes_ += n;
  if (accumulated_bytes_ > kMaxReplyBytes) {
    throw Error(ErrorCode::limit,
                "streamed reply larger than " + std::to_string(kMaxReplyBytes) + " bytes");
  }
}

Reply OpenAiStreamDecoder::take_reply() {
  Reply reply = std::move(reply_);
  reply_ = Reply{};
  for (auto& [index, call] : calls_) {
    reply.tool_calls.push_back(finished_call(std::move(call.id), std::move(call.name),
                                             std::move(call.arguments),
                                             finish_reason_ == "length"));
  }
  calls_.clear();
  if (!saw_usage_) reply.usage = openai_usage(nullptr, timings_);
  reply.finish_reason = openai_finish_reason(finish_reason_, !reply.tool_calls.empty());
  return reply;
}

}  // namespace luagent::llm
