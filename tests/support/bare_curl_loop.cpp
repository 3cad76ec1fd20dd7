#include "support/bare_curl_loop.hpp"

#include <curl/curl.h>

namespace luagent::test {
namespace {

struct Slot {
  CURL* easy = nullptr;
  std::string body;
  std::string reply;
};

std::size_t append_reply(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<Slot*>(user)->reply.append(data, size * count);
  return size * count;
}

}  // namespace

bool has_completion_text(const nlohmann::json& reply) {
  if (!reply.is_object() || !reply.contains("choices") || !reply["choices"].is_array() ||
      reply["choices"].empty())
    return false;
  const auto& message = reply["choices"][0].value("message", nlohmann::json::object());
  return message.contains("content") && message["content"].is_string() &&
         !message["content"].get_ref<const std::string&>().empty();
}

BareLoopResult run_bare_curl_loop(const std::string& url, long calls, int concurrency,
                                  const std::function<nlohmann::json(long)>& request_for,
                                  const std::function<bool(const nlohmann::json&)>& accept,
                                  const std::vector<std::string>& extra_headers) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURLM* multi = curl_multi_init();
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");
  for (const auto& header : extra_headers) headers = curl_slist_append(headers, header.c_str());
  std::vector<Slot> slots(static_cast<std::size_t>(concurrency));
  long started = 0, finished = 0;
  BareLoopResult result;
  auto launch = [&](Slot& slot) {
    if (!slot.easy) {
      slot.easy = curl_easy_init();
      curl_easy_setopt(slot.easy, CURLOPT_URL, url.c_str());
      curl_easy_setopt(slot.easy, CURLOPT_HTTPHEADER, headers);
      curl_easy_setopt(slot.easy, CURLOPT_WRITEFUNCTION, &append_reply);
      curl_easy_setopt(slot.easy, CURLOPT_WRITEDATA, &slot);
      curl_easy_setopt(slot.easy, CURLOPT_PRIVATE, &slot);
      curl_easy_setopt(slot.easy, CURLOPT_NOSIGNAL, 1L);
    }
    slot.body = request_for(started++).dump();
    slot.reply.clear();
    curl_easy_setopt(slot.easy, CURLOPT_POSTFIELDS, slot.body.data());
    curl_easy_setopt(slot.easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(slot.body.size()));
    curl_multi_add_handle(multi, slot.easy);
  };
  for (auto& slot : slots)
    if (started < calls) launch(slot);
  while (finished < calls) {
    curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
    int running = 0;
    curl_multi_perform(multi, &running);
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(multi, &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      Slot* slot = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&slot));
      long status = 0;
      curl_easy_getinfo(message->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle(multi, message->easy_handle);
      auto reply = nlohmann::json::parse(slot->reply, nullptr, false);
      if (message->data.result == CURLE_OK && status == 200 && !reply.is_discarded() &&
          accept(reply))
        ++result.completed;
      else
        ++result.failures;
      ++finished;
      if (started < calls) launch(*slot);
    }
  }
  for (auto& slot : slots) curl_easy_cleanup(slot.easy);
  curl_slist_free_all(headers);
  curl_multi_cleanup(multi);
  return result;
}

}  // namespace luagent::test
