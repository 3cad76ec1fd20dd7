#include "llm/replay_provider.hpp"

#include <chrono>

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

ReplayProvider::ReplayProvider(EventLoop& loop, const std::filesystem::path& cassette,
                               std::chrono::milliseconds latency)
    : loop_(loop), path_(cassette), latency_(latency) {
  std::ifstream in(cassette);
  std::error_code ec;
  if (std::filesystem::is_directory(cassette, ec))  // opens, and reads as empty
    throw Error(ErrorCode::config,
                "the cassette " + cassette.string() + " is a folder, not a JSONL file");
  if (!in)
    throw Error(ErrorCode::config, "cannot read the cassette " + cassette.string() +
                                       " (the replay provider needs one: set cassette = ... in "
                                       "luagent.config.lua or LUAGENT_CASSETTE)");
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto where = cassette.filename().string() + ":" + std::to_string(number);
    auto entry = nlohmann::json::parse(line, nullptr, false);
    if (entry.is_discarded() || !entry.is_object())
      throw Error(ErrorCode::config, "malformed cassette: line is not a JSON object", where);
    auto request = entry.find("request");
    if (request == entry.end() || !request->is_object() || !request->contains("messages"))
      throw Error(ErrorCode::config, "malformed cassette: \"request\" with \"messages\" missing",
                  where);
    Recorded recorded;
    if (auto response = entry.find("response"); response != entry.end()) {
      if (!response->is_object() || !response->contains("text") || !(*response)["text"].is_string())
        throw Error(ErrorCode::config, "malformed cassette: \"response\" needs a string \"text\"",
                    where);
      recorded.response = *response;
    } else if (auto error = entry.find("error"); error != entry.end() && error->is_object()) {
      recorded.response = {{"error", *error}};
    } else {
      throw Error(ErrorCode::config, "malformed cassette: a line needs \"response\" or \"error\"",
                  where);
    }
    Request key_request;
    key_request.messages = (*request)["messages"];
    if (auto schema = request->find("response_schema");
        schema != request->end() && !schema->is_null())
      key_request.response_schema = std::make_shared<const CompiledSchema>(*schema);
    if (auto tools = request->find("tools"); tools != request->end() && tools->is_array())
      for (const auto& tool : *tools)
        key_request.tools.push_back({tool.value("name", ""), tool.value("description", ""),
                                     tool.value("parameters", nlohmann::json::object())});
    recorded_[cassette_key(key_request)].push_back(std::move(recorded));
  }
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
    if (request.messages.is_array() && !request.messages.empty())
      last = request.messages.back().value("content", "");
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
    const Recorded& recorded = found->second[std::min(served, found->second.size() - 1)];
    ++served;
    if (recorded.response.contains("error")) {
      const auto& error = recorded.response["error"];
      outcome.result = Error(error_code_from_name(error.value("code", "provider")),
                             error.value("message", "recorded error"));
    } else {
      Reply reply;
      reply.text = recorded.response["text"].get<std::string>();
      reply.finish_reason = recorded.response.value("finish_reason", "stop");
      reply.model = outcome.trace.model;
      if (auto usage = recorded.response.find("usage"); usage != recorded.response.end()) {
        reply.usage.input_tokens = usage->value("input_tokens", std::int64_t{0});
        reply.usage.output_tokens = usage->value("output_tokens", std::int64_t{0});
      }
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
