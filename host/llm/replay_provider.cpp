#include "llm/replay_provider.hpp"

#include <algorithm>
#include <chrono>
#include <string_view>

#include "bounded_read.hpp"

#include "llm/json_schema.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {

nlohmann::json cassette_request_json(const Request& request) {
  nlohmann::json json = {{"messages", request.messages}};
  if (request.response_schema) json["response_schema"] = request.response_schema->json();
  if (!request.tools.empty()) {
    nlohmann::json tools = nlohmann::json::array();
    for (const auto& tool : request.tools)
      tools.push_back({{"name", tool.name},
                       {"description", tool.description},
                       {"parameters", tool.parameters}});
    json["tools"] = std::move(tools);
  }
  return json;
}

std::string cassette_key(const Request& request) {
  return cassette_request_json(request).dump();
}

namespace {

// What one line of a cassette says, checked field by field: each mistake is named, where
// an unchecked `value()` or `get()` used to end the run in an internal error, or when the
// call was answered, a pump() that threw.
class CassetteLine {
 public:
  CassetteLine(const std::string& name, int number) : name_(name), number_(number) {}

  [[noreturn]] void refuse(const std::string& what) const {
    throw Error(ErrorCode::config, "malformed cassette: " + what, name_, number_);
  }

  // The string at `key` of `object`, or `otherwise` when there is none.
  std::string string_at(const nlohmann::json& object, const char* key, const char* where,
                        std::string otherwise) const {
    auto found = object.find(key);
    if (found == object.end()) return otherwise;
    if (!found->is_string()) refuse(std::string("\"") + where + "\" must be a string");
    return found->get<std::string>();
  }

  // A token count at `key` of `usage`, or 0 when there is none.
  std::int64_t count_at(const nlohmann::json& usage, const char* key) const {
    auto found = usage.find(key);
    if (found == usage.end()) return 0;
    if (!found->is_number_integer() || found->get<std::int64_t>() < 0)
      refuse(std::string("\"response.usage.") + key + "\" must be a whole number of tokens");
    return found->get<std::int64_t>();
  }

  // The request the line answers, as cassette_key() reads a live one.
  Request request(const nlohmann::json& entry) const {
    auto request = entry.find("request");
    if (request == entry.end() || !request->is_object())
      refuse("a line needs a \"request\" object");
    auto messages = request->find("messages");
    if (messages == request->end() || !messages->is_array())
      refuse("\"request\" needs a \"messages\" array");
    Request key;
    key.messages = *messages;
    if (auto schema = request->find("response_schema");
        schema != request->end() && !schema->is_null()) {
      if (!schema->is_object()) refuse("\"request.response_schema\" must be an object");
      key.response_schema = std::make_shared<const CompiledSchema>(*schema);
    }
    if (auto tools = request->find("tools"); tools != request->end() && !tools->is_null()) {
      if (!tools->is_array()) refuse("\"request.tools\" must be an array");
      for (const auto& tool : *tools) {
        if (!tool.is_object() || !tool.contains("name"))
          refuse("each of \"request.tools\" must be an object with a \"name\"");
        key.tools.push_back({string_at(tool, "name", "request.tools[].name", ""),
                             string_at(tool, "description", "request.tools[].description", ""),
                             tool.value("parameters", nlohmann::json::object())});
      }
    }
    return key;
  }

  CassetteAnswer answer(const nlohmann::json& entry) const {
    CassetteAnswer answer;
    if (auto response = entry.find("response"); response != entry.end()) {
      if (!response->is_object() || !response->contains("text") || !(*response)["text"].is_string())
        refuse("\"response\" needs a string \"text\"");
      answer.text = (*response)["text"].get<std::string>();
      answer.finish_reason =
          string_at(*response, "finish_reason", "response.finish_reason", "stop");
      if (auto usage = response->find("usage"); usage != response->end()) {
        if (!usage->is_object()) refuse("\"response.usage\" must be an object");
        answer.usage.input_tokens = count_at(*usage, "input_tokens");
        answer.usage.output_tokens = count_at(*usage, "output_tokens");
      }
      return answer;
    }
    auto error = entry.find("error");
    if (error == entry.end()) refuse("a line needs \"response\" or \"error\"");
    if (!error->is_object()) refuse("\"error\" must be an object");
    std::string code = string_at(*error, "code", "error.code", "provider");
    ErrorCode error_code = error_code_from_name(code);
    if (error_code == ErrorCode::internal && code != "internal")
      refuse("\"error.code\" '" + code + "' is not an error code (see docs/errors.md)");
    answer.error =
        Error(error_code, string_at(*error, "message", "error.message", "recorded error"));
    return answer;
  }

 private:
  const std::string& name_;
  int number_;
};

}  // namespace

CassetteAnswers read_cassette(std::istream& in, const std::string& name, std::size_t limit) {
  std::string text;
  if (!read_at_most(in, limit, text))
    throw Error(ErrorCode::config,
                "the cassette " + name + " is larger than " +
                    (limit % (1 << 20) == 0 ? std::to_string(limit >> 20) + " MiB"
                                            : std::to_string(limit) + " bytes"));
  CassetteAnswers answers;
  int number = 0;
  for (std::size_t at = 0; at < text.size();) {
    std::size_t end = std::min(text.find('\n', at), text.size());
    std::string_view line(text.data() + at, end - at);
    at = end + 1;
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    CassetteLine checked(name, number);
    auto entry = nlohmann::json::parse(line, nullptr, false);
    if (entry.is_discarded() || !entry.is_object()) checked.refuse("line is not a JSON object");
    Request request = checked.request(entry);
    answers[cassette_key(request)].push_back(checked.answer(entry));
  }
  return answers;
}

ReplayProvider::ReplayProvider(EventLoop& loop, const std::filesystem::path& cassette,
                               std::chrono::milliseconds latency)
    : loop_(loop), path_(cassette), latency_(latency) {
  std::ifstream in(cassette, std::ios::binary);
  std::error_code ec;
  if (std::filesystem::is_directory(cassette, ec))  // opens, and reads as empty
    throw Error(ErrorCode::config,
                "the cassette " + cassette.string() + " is a folder, not a JSONL file");
  if (!in)
    throw Error(ErrorCode::config, "cannot read the cassette " + cassette.string() +
                                       " (the replay provider needs one: set cassette = ... in "
                                       "luagent.config.lua or LUAGENT_CASSETTE)");
  recorded_ = read_cassette(in, cassette.string());
}

CallId ReplayProvider::start(Request request, ChunkCallback on_chunk, DoneCallback done) {
  CallId id = next_id_++;
  std::string key = cassette_key(request);
  Outcome outcome{Error(ErrorCode::internal, "unset"), {}};
  outcome.trace.provider = "replay";
  outcome.trace.model = request.model.empty() ? "replay" : request.model;
  outcome.trace.request_bytes = static_cast<std::int64_t>(key.size());
  outcome.trace.request_body = key;  // the rendered prompt, for the trace
  outcome.trace.attempts = 1;
  outcome.trace.latency_ms = static_cast<double>(latency_.count());
  auto found = recorded_.find(key);
  if (found == recorded_.end()) {
    std::string last;
    if (request.messages.is_array() && !request.messages.empty()) {
      const auto& message = request.messages.back();
      if (message.is_object() && message.contains("content") && message["content"].is_string())
        last = message["content"].get<std::string>();
    }
    if (last.size() > 160) last = "..." + last.substr(last.size() - 160);
    outcome.result = Error(ErrorCode::not_found,
                           "the cassette " + path_.filename().string() +
                               " has no reply recorded for this request (the prompt or schema "
                               "changed?). Re-record it with LUAGENT_RECORD=FILE against a live "
                               "provider. The request ended with: " +
                               last);
  } else {
    // Identical requests get the recorded replies in order, then the last one again.
    std::size_t& served = served_[key];
    const CassetteAnswer& recorded = found->second[std::min(served, found->second.size() - 1)];
    ++served;
    if (recorded.error) {
      outcome.result = *recorded.error;
    } else {
      Reply reply;
      reply.text = recorded.text;
      reply.finish_reason = recorded.finish_reason;
      reply.model = outcome.trace.model;
      reply.usage = recorded.usage;
      outcome.trace.usage = reply.usage;
      outcome.trace.finish_reason = reply.finish_reason;
      outcome.result = std::move(reply);
    }
  }
  auto fire = [this, id, outcome = std::move(outcome), on_chunk = std::move(on_chunk),
               done = std::move(done)]() mutable {
    in_flight_.erase(id);
    if (on_chunk && outcome.ok()) on_chunk(StreamChunk{outcome.reply().text, {}, {}});
    done(std::move(outcome));
  };
  in_flight_[id] = loop_.after(latency_, std::move(fire));
  return id;
}

void ReplayProvider::cancel(CallId id) {
  auto found = in_flight_.find(id);
  if (found == in_flight_.end()) return;
  loop_.cancel_timer(found->second);
  in_flight_.erase(found);
}

RecordingProvider::RecordingProvider(std::unique_ptr<Provider> inner,
                                     const std::filesystem::path& cassette)
    : inner_(std::move(inner)), out_(std::make_shared<std::ofstream>(cassette, std::ios::app)) {
  if (!*out_) throw Error(ErrorCode::config, "cannot write the cassette " + cassette.string());
}

CallId RecordingProvider::start(Request request, ChunkCallback on_chunk, DoneCallback done) {
  nlohmann::json recorded_request = cassette_request_json(request);
  return inner_->start(std::move(request), std::move(on_chunk),
                       [out = out_, recorded_request = std::move(recorded_request),
                        done = std::move(done)](Outcome outcome) mutable {
                         nlohmann::json line = {{"request", std::move(recorded_request)}};
                         if (outcome.ok()) {
                           line["response"] = {{"text", outcome.reply().text},
                                               {"finish_reason", outcome.reply().finish_reason}};
                         } else {
                           line["error"] = {{"code", error_code_name(outcome.error().code())},
                                            {"message", outcome.error().message()}};
                         }
                         *out << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                              << '\n';
                         out->flush();
                         done(std::move(outcome));
                       });
}

}  // namespace luagent::llm
