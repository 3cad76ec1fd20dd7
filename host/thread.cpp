#include "luagent/thread.hpp"

#include <openssl/rand.h>
#include <algorithm>

#include <array>
#include <cctype>
#include <chrono>
#include <ctime>
#include <ostream>

#include "luagent/error.hpp"

namespace luagent {
namespace {

constexpr std::array<std::pair<Status, std::string_view>, 6> kStatusNames{{
    {Status::running, "running"},
    {Status::awaiting_human, "awaiting_human"},
    {Status::awaiting_approval, "awaiting_approval"},
    {Status::done, "done"},
    {Status::failed, "failed"},
    {Status::cancelled, "cancelled"},
}};

}  // namespace

std::int64_t parse_utc(const std::string& text) {
  auto refuse = [&](const std::string& why) {
    return Error(ErrorCode::usage,
                 "time '" + text + "' is not of the form YYYY-MM-DDTHH:MM:SS.mmmZ" + why);
  };
  // Exactly what format_utc writes: sscanf alone took "2026-13-45T99:99:99.000Z" (and
  // ".5Z" as 5 ms) and timegm moved it to some other instant without a word.
  static constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (text.size() != kShape.size()) throw refuse("");
  for (std::size_t i = 0; i < kShape.size(); ++i)
    if (kShape[i] == 'd' ? !std::isdigit(static_cast<unsigned char>(text[i]))
                         : text[i] != kShape[i])
      throw refuse("");
  int year, month, day, hour, minute, second, millis = 0;
  std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &year, &month, &day, &hour, &minute,
              &second, &millis);
  if (!std::chrono::year_month_day{std::chrono::year(year),
                                   std::chrono::month(static_cast<unsigned>(month)),
                                   std::chrono::day(static_cast<unsigned>(day))}
           .ok())
    throw refuse(" (there is no such day)");
  if (hour > 23 || minute > 59 || second > 59) throw refuse(" (there is no such time of day)");
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000 + millis;
}

Event Event::make(std::string type, nlohmann::json data) {
  Event event;
  event.type = std::move(type);
  event.data = std::move(data);
  event.at_ms = now_ms();
  return event;
}

std::string_view status_name(Status status) {
  for (const auto& [s, name] : kStatusNames)
    if (s == status) return name;
  return "running";
}

std::ostream& operator<<(std::ostream& out, Status status) {
  return out << status_name(status);
}

std::optional<Status> status_from_name(std::string_view name) {
  for (const auto& [s, n] : kStatusNames)
    if (n == name) return s;
  return std::nullopt;
}

Status derive_status(const Event* last) {
  if (!last) return Status::running;
  if (last->type == event_type::await) {
    const auto kind = last->data.is_object() ? last->data.value("kind", "") : "";
    return kind == "approval" ? Status::awaiting_approval : Status::awaiting_human;
  }
  if (last->type == event_type::done) return Status::done;
  if (last->type == event_type::failed) return Status::failed;
  if (last->type == event_type::cancelled) return Status::cancelled;
  return Status::running;
}

Status derive_status(const std::vector<Event>& events) {
  return derive_status(events.empty() ? nullptr : &events.back());
}

std::string new_thread_id() {
  // The creation time comes first, written in an alphabet whose ASCII order is its numeric
  // order, so ids sort by creation time: the store's tables are keyed by thread id, and
  // threads in flight together then share a few B-tree pages instead of each dirtying a
  // random page of its own in every commit.
  static constexpr char kAlphabet[] = "234567abcdefghijklmnopqrstuvwxyz";
  constexpr int kTimeCharacters = 9;  // 45 bits of milliseconds: enough until the year 3084
  // 65 random bits keep ids unguessable and unique however many share a millisecond.
  std::array<unsigned char, 13> random{};
  if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1)
    throw Error(ErrorCode::internal, "no randomness available for a thread id");
  const auto created = static_cast<std::uint64_t>(now_ms());
  std::string id = "th_";
  for (int i = kTimeCharacters; i-- > 0;) id += kAlphabet[(created >> (5 * i)) & 31];
  for (unsigned char byte : random) id += kAlphabet[byte % 32];  // 256 % 32 == 0: uniform
  return id;
}

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Written digit by digit: thread:events() formats every event's time on every step, and
// gmtime_r + snprintf cost about 4,000 instructions a call.
std::string format_utc(std::int64_t unix_ms) {
  using namespace std::chrono;
  // ISO 8601's four-digit years: floor<days> overflows near the ends of int64 milliseconds,
  // and std::chrono::year stops at ±32767, so a stored time beyond them (another process,
  // a damaged row) is written as the nearest one that is.
  constexpr std::int64_t kYear0 = -62'167'219'200'000;        // 0000-01-01T00:00:00.000Z
  constexpr std::int64_t kYear9999End = 253'402'300'799'999;  // 9999-12-31T23:59:59.999Z
  unix_ms = std::clamp(unix_ms, kYear0, kYear9999End);
  const sys_time<milliseconds> time{milliseconds(unix_ms)};
  const sys_days day = floor<days>(time);
  const year_month_day date{day};
  const hh_mm_ss<milliseconds> clock{time - day};
  const int year = static_cast<int>(date.year());
  std::string text = "0000-00-00T00:00:00.000Z";
  auto put = [&text](std::size_t at, std::size_t digits, long long value) {
    for (std::size_t i = at + digits; i-- > at; value /= 10)
      text[i] = static_cast<char>('0' + value % 10);
  };
  put(0, 4, year);
  put(5, 2, static_cast<unsigned>(date.month()));
  put(8, 2, static_cast<unsigned>(date.day()));
  put(11, 2, clock.hours().count());
  put(14, 2, clock.minutes().count());
  put(17, 2, clock.seconds().count());
  put(20, 3, clock.subseconds().count());
  return text;
}

nlohmann::json to_json(const Event& event) {
  nlohmann::json json = {{"id", event.id},
                         {"type", event.type},
                         {"data", event.data},
                         {"at", format_utc(event.at_ms)}};
  if (!event.version.empty()) json["version"] = event.version;
  if (!event.key.empty()) json["key"] = event.key;
  return json;
}

Event event_from_json(const nlohmann::json& json) {
  if (!json.is_object()) throw Error(ErrorCode::usage, "an event must be a JSON object");
  auto type = json.find("type");
  if (type == json.end() || !type->is_string() || type->get<std::string>().empty())
    throw Error(ErrorCode::usage, "an event needs a non-empty string \"type\"");
  Event event;
  event.type = type->get<std::string>();
  event.data = json.value("data", nlohmann::json());
  if (auto id = json.find("id"); id != json.end()) {
    if (!id->is_number_integer()) throw Error(ErrorCode::usage, "event \"id\" must be an integer");
    event.id = id->get<std::int64_t>();
  }
  if (auto at = json.find("at"); at != json.end()) {
    if (!at->is_string()) throw Error(ErrorCode::usage, "event \"at\" must be a string");
    event.at_ms = parse_utc(at->get<std::string>());
  } else {
    event.at_ms = now_ms();
  }
  if (auto version = json.find("version"); version != json.end() && version->is_string())
    event.version = version->get<std::string>();
  if (auto key = json.find("key"); key != json.end()) {
    if (!key->is_string()) throw Error(ErrorCode::usage, "event \"key\" must be a string");
    event.key = key->get<std::string>();
  }
  return event;
}

nlohmann::json to_json(const Thread& thread) {
  nlohmann::json events = nlohmann::json::array();
  for (const Event& event : thread.events) events.push_back(to_json(event));
  nlohmann::json json = {{"id", thread.id},
                         {"agent", thread.agent},
                         {"status", status_name(thread.status())},
                         {"created", format_utc(thread.created_ms)},
                         {"events", std::move(events)}};
  if (!thread.agent_path.empty()) json["agent_path"] = thread.agent_path;
  if (!thread.parent_id.empty()) {
    json["parent"] = {{"id", thread.parent_id}, {"event", thread.parent_event}};
  }
  return json;
}

Thread thread_from_json(const nlohmann::json& json) {
  if (!json.is_object()) throw Error(ErrorCode::usage, "a thread must be a JSON object");
  Thread thread;
  try {
    thread.id = json.at("id").get<std::string>();
    thread.agent = json.at("agent").get<std::string>();
    thread.agent_path = json.value("agent_path", "");
    if (auto parent = json.find("parent"); parent != json.end() && parent->is_object()) {
      thread.parent_id = parent->value("id", "");
      thread.parent_event = parent->value("event", std::int64_t{0});
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::usage, std::string("thread JSON: ") + e.what());
  }
  thread.created_ms = json.contains("created") && json["created"].is_string()
                          ? parse_utc(json["created"].get<std::string>())
                          : now_ms();
  auto events = json.find("events");
  if (events == json.end() || !events->is_array())
    throw Error(ErrorCode::usage, "thread JSON needs an \"events\" array");
  for (const auto& item : *events) {
    Event event = event_from_json(item);
    event.id = thread.version() + 1;  // ids are positions; never trust the file for them
    thread.events.push_back(std::move(event));
  }
  return thread;
}

}  // namespace luagent
