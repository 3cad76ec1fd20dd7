// fs:DIR — a thread is a file. Every write goes to a temporary file that is fsynced,
// renamed over the old one and followed by an fsync of the folder, so a reader (or a
// process restarted after kill -9 or power loss) sees the old thread or the new one,
// never a mix. Writers of one thread serialize on flock(<id>.lock), which the kernel
// releases when a process dies, so a crash never leaves a thread locked.
#include "store/fs_store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "failpoint.hpp"
#include "json_depth.hpp"
#include "luagent/error.hpp"

namespace luagent {
namespace {

Error io_error(const std::string& what, const std::filesystem::path& path) {
  return Error(ErrorCode::io, what + " " + path.string() + ": " + std::strerror(errno));
}

// Thread ids become file names: only the characters new_thread_id() produces, so no id
// can name a path outside the folder.
void check_id(std::string_view id) {
  bool ok = !id.empty() && id.size() <= 128;
  for (char c : id)
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-');
  if (!ok)
    throw Error(ErrorCode::not_found, "no thread '" + std::string(id) + "' (not a thread id)");
}

// Holds flock(LOCK_EX) on a thread's lock file for its lifetime.
class ThreadLock {
 public:
  explicit ThreadLock(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw io_error("cannot open lock file", path);
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd_);
      errno = saved;
      throw io_error("cannot lock", path);
    }
  }
  ~ThreadLock() { ::close(fd_); }  // closing releases the lock
  ThreadLock(const ThreadLock&) = delete;
  ThreadLock& operator=(const ThreadLock&) = delete;

 private:
  int fd_ = -1;
};

void write_all(int fd, std::string_view content, const std::filesystem::path& path) {
  while (!content.empty()) {
    ssize_t written = ::write(fd, content.data(), content.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw io_error("cannot write", path);
    }
    content.remove_prefix(static_cast<std::size_t>(written));
  }
}

std::string read_text(const std::filesystem::path& path, bool* missing) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *missing = true;
    return {};
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The top-level strings and integers of a thread's record, as far as its text parses: what
// can still be known of a record that does not read as a thread. A torn or damaged file
// keeps its beginning, and the record's keys are written in order ("agent" and "created"
// first), so the agent's name usually survives.
class TopLevelFields final : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::map<std::string, std::string> strings;
  std::map<std::string, std::int64_t> integers;

  bool key(string_t& name) override {
    if (depth_ == 1) key_ = name;
    return true;
  }
  bool string(string_t& value) override {
    if (depth_ == 1) strings[key_] = value;
    return true;
  }
  bool number_integer(number_integer_t value) override {
    if (depth_ == 1) integers[key_] = value;
    return true;
  }
  bool number_unsigned(number_unsigned_t value) override {
    if (depth_ == 1 &&
        value <= static_cast<number_unsigned_t>(std::numeric_limits<std::int64_t>::max()))
      integers[key_] = static_cast<std::int64_t>(value);
    return true;
  }
  bool start_object(std::size_t) override { return ++depth_, true; }
  bool end_object() override { return --depth_, true; }
  bool start_array(std::size_t) override { return ++depth_, true; }
  bool end_array() override { return --depth_, true; }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception&) override {
    return false;  // what came before the damage is all there is to know
  }

 private:
  int depth_ = 0;
  std::string key_;
};

// The listing's entry for thread `id` whose record `text` (in `file`) does not read as a
// thread: as SQLite lists a thread whose events do not read, and fails only its load. The
// agent and creation time come from the record's readable beginning when it has them;
// what cannot be known stays empty (no agent, no events, status running), and the file's
// modification time, which every append sets, stands for the last update (and for the
// creation when that is lost too).
ThreadSummary summary_of_unreadable(std::string_view id, const std::string& text,
                                    const std::filesystem::path& file) {
  ThreadSummary summary;
  summary.id = std::string(id);
  std::error_code ec;
  auto modified = std::filesystem::last_write_time(file, ec);
  if (!ec)
    summary.updated_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::file_clock::to_sys(modified).time_since_epoch())
                             .count();
  TopLevelFields fields;
  nlohmann::json::sax_parse(text, &fields);
  if (auto agent = fields.strings.find("agent"); agent != fields.strings.end())
    summary.agent = agent->second;
  auto created = fields.integers.find("created");
  summary.created_ms = created != fields.integers.end() ? created->second : summary.updated_ms;
  return summary;
}

nlohmann::json event_record(const Event& event) {
  nlohmann::json json = {{"type", event.type}, {"data", event.data}, {"at", event.at_ms}};
  if (!event.version.empty()) json["version"] = event.version;
  if (!event.key.empty()) json["key"] = event.key;
  return json;
}

}  // namespace

nlohmann::json fs_record(const Thread& thread) {
  nlohmann::json events = nlohmann::json::array();
  for (const Event& event : thread.events) events.push_back(event_record(event));
  nlohmann::json json = {{"schema", kStoreSchemaVersion},
                         {"id", thread.id},
                         {"agent", thread.agent},
                         {"created", thread.created_ms}};
  if (!thread.agent_path.empty()) json["agent_path"] = thread.agent_path;
  if (!thread.parent_id.empty())
    json["parent"] = {{"id", thread.parent_id}, {"event", thread.parent_event}};
  json["events"] = std::move(events);
  return json;
}

Thread thread_from_fs_record(const nlohmann::json& record, std::string_view id,
                             const std::filesystem::path& file) {
  const std::string where = file.empty() ? std::string() : file.string() + ": ";
  auto corrupt = [&](const std::string& why) {
    return Error(ErrorCode::corrupt, "thread " + std::string(id) + ": " + where + why);
  };
  if (!record.is_object()) throw corrupt("the record is not a JSON object");
  auto schema = record.find("schema");
  if (schema == record.end()) {
    // Schema 0: the thread exactly as luagent::to_json(Thread) writes it (times as text).
    try {
      return thread_from_json(record);
    } catch (const Error& e) {
      throw corrupt(e.message());
    }
  }
  if (!schema->is_number_integer()) throw corrupt("\"schema\" is not an integer");
  if (schema->get<std::int64_t>() > kStoreSchemaVersion)
    throw Error(ErrorCode::schema_version,
                "thread " + std::string(id) + ": " + where + "written by a newer luagent (schema " +
                    std::to_string(schema->get<std::int64_t>()) + ", this build reads up to " +
                    std::to_string(kStoreSchemaVersion) + ")");
  Thread thread;
  try {
    thread.id = record.at("id").get<std::string>();
    thread.agent = record.at("agent").get<std::string>();
    thread.agent_path = record.value("agent_path", "");
    thread.created_ms = record.at("created").get<std::int64_t>();
    if (auto parent = record.find("parent"); parent != record.end()) {
      thread.parent_id = parent->at("id").get<std::string>();
      thread.parent_event = parent->at("event").get<std::int64_t>();
    }
    for (const auto& item : record.at("events")) {
      Event event;
      event.id = thread.version() + 1;
      event.type = item.at("type").get<std::string>();
      event.data = item.value("data", nlohmann::json());
      event.at_ms = item.at("at").get<std::int64_t>();
      event.version = item.value("version", "");
      event.key = item.value("key", "");
      thread.events.push_back(std::move(event));
    }
  } catch (const nlohmann::json::exception& e) {
    throw corrupt(std::string("bad record: ") + e.what());
  }
  if (thread.id != id) throw corrupt("the file holds thread '" + thread.id + "'");
  return thread;
}

FsStore::FsStore(std::string uri, std::filesystem::path dir, StoreOpening opening)
    : uri_(std::move(uri)), dir_(std::move(dir)) {
  std::error_code ec;
  if (opening == StoreOpening::create_if_missing)
    std::filesystem::create_directories(dir_, ec);
  else if (!std::filesystem::exists(dir_, ec))
    throw Error(ErrorCode::not_found,
                "no store " + uri_ + ": " + dir_.string() + " does not exist");
  if (!std::filesystem::is_directory(dir_))
    throw Error(ErrorCode::config, "cannot use store " + uri_ + ": " + dir_.string() +
                                       " is not a folder that can be created");
  dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0 || ::access(dir_.c_str(), W_OK) != 0) {
    if (dir_fd_ >= 0) ::close(dir_fd_);
    throw Error(ErrorCode::config,
                "cannot use store " + uri_ + ": " + dir_.string() + ": " + std::strerror(errno));
  }
}

FsStore::~FsStore() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

std::filesystem::path FsStore::file(std::string_view id, const char* suffix) const {
  return dir_ / (std::string(id) + suffix);
}

std::filesystem::path FsStore::thread_file(std::string_view id) const {
  return file(id, ".json");
}

void FsStore::write_atomically(const std::filesystem::path& path, std::string_view content,
                               bool durable) {
  auto temp = path;
  temp += ".tmp" + std::to_string(::getpid());
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error("cannot create", temp);
  try {
    write_all(fd, content, temp);
    if (durable && ::fsync(fd) != 0) throw io_error("cannot fsync", temp);
  } catch (...) {
    ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    Error error = io_error("cannot rename into", path);
    ::unlink(temp.c_str());
    throw error;
  }
  // The rename is durable only once the folder entry is.
  if (durable && ::fsync(dir_fd_) != 0) throw io_error("cannot fsync folder", dir_);
}

std::string FsStore::read_record(std::string_view id) const {
  check_id(id);
  bool missing = false;
  std::string text = read_text(file(id, ".json"), &missing);
  if (missing) throw Error(ErrorCode::not_found, "no thread " + std::string(id) + " in " + uri_);
  return text;
}

Thread FsStore::thread_from_text(std::string_view id, const std::string& text) const {
  // An event's data sits three levels down (the record, its events, the event), and the
  // host stores nothing deeper than kMaxJsonDepth there: deeper is damage, and copying it
  // out of the record, recursively, would overflow the stack.
  if (nested_deeper_than(text, kMaxJsonBracketNesting + 3))
    throw Error(ErrorCode::corrupt, "thread " + std::string(id) + ": " +
                                        file(id, ".json").string() + " nests deeper than " +
                                        std::to_string(kMaxJsonDepth) +
                                        " levels in an event's data");
  auto record = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (record.is_discarded())
    throw Error(ErrorCode::corrupt, "thread " + std::string(id) + ": " +
                                        file(id, ".json").string() +
                                        " is not JSON (truncated or damaged)");
  return thread_from_fs_record(record, id, file(id, ".json"));
}

Thread FsStore::read_thread(std::string_view id) const {
  return thread_from_text(id, read_record(id));
}

void FsStore::write_thread(const Thread& thread) {
  failpoint("before_commit");
  write_atomically(file(thread.id, ".json"), fs_record(thread).dump(), /*durable=*/true);
  failpoint("after_commit");
}

void FsStore::create(Thread& thread) {
  check_id(thread.id);
  ThreadLock lock(file(thread.id, ".lock"));
  if (std::filesystem::exists(file(thread.id, ".json")))
    throw Error(ErrorCode::conflict, "thread " + thread.id + " already exists");
  for (std::size_t i = 0; i < thread.events.size(); ++i)
    thread.events[i].id = static_cast<std::int64_t>(i + 1);
  write_thread(thread);
}

Thread FsStore::load(std::string_view id) {
  return read_thread(id);
}

std::vector<ThreadSummary> FsStore::list(const ListFilter& filter) {
  std::vector<ThreadSummary> result;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const auto name = entry.path().filename().string();
    if (name.size() <= 5 || name.compare(name.size() - 5, 5, ".json") != 0) continue;
    const std::string id = name.substr(0, name.size() - 5);
    std::string text;
    try {
      text = read_record(id);
    } catch (const Error&) {
      continue;  // not a thread's file (no thread id), or gone since the folder was read
    }
    ThreadSummary summary;
    try {
      Thread thread = thread_from_text(id, text);
      summary.id = thread.id;
      summary.agent = thread.agent;
      summary.status = thread.status();
      summary.version = thread.version();
      summary.created_ms = thread.created_ms;
      summary.updated_ms = thread.events.empty() ? thread.created_ms : thread.events.back().at_ms;
    } catch (const Error&) {
      // Listed all the same, as far as it can be read: its load fails, naming the file.
      summary = summary_of_unreadable(id, text, entry.path());
    }
    if (matches(filter, summary)) result.push_back(std::move(summary));
  }
  std::sort(result.begin(), result.end(), [](const ThreadSummary& a, const ThreadSummary& b) {
    return a.created_ms != b.created_ms ? a.created_ms > b.created_ms : a.id < b.id;
  });
  if (filter.limit && result.size() > filter.limit) result.resize(filter.limit);
  return result;
}

AppendResult FsStore::append(std::string_view id, std::int64_t expected_version,
                             std::vector<Event> events) {
  check_id(id);
  ThreadLock lock(file(id, ".lock"));
  Thread thread = read_thread(id);
  AppendResult result;
  // As in SQLite: a key seen before wins over the version check.
  if (!events.empty() && !events.front().key.empty()) {
    for (const Event& stored : thread.events) {
      if (stored.key != events.front().key) continue;
      if (stored.type != events.front().type || stored.data != events.front().data)
        throw Error(ErrorCode::conflict, "idempotency key '" + events.front().key +
                                             "' was already used for a different event");
      result.events.assign(thread.events.begin() + (stored.id - 1), thread.events.end());
      result.replayed = true;
      return result;
    }
  }
  if (thread.version() != expected_version)
    throw Error(ErrorCode::conflict, "thread " + std::string(id) + " changed meanwhile (version " +
                                         std::to_string(thread.version()) + ", expected " +
                                         std::to_string(expected_version) + ")");
  for (Event& event : events) {
    event.id = thread.version() + 1;
    thread.events.push_back(event);
  }
  write_thread(thread);
  result.events = std::move(events);
  return result;
}

void FsStore::record_call(std::string_view thread_id, std::int64_t event_id,
                          const nlohmann::json& trace) {
  check_id(thread_id);
  if (!std::filesystem::exists(file(thread_id, ".json")))
    throw Error(ErrorCode::not_found, "no thread " + std::string(thread_id) + " in " + uri_);
  nlohmann::json line = trace;
  line["event"] = event_id;
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  auto path = file(thread_id, ".calls.jsonl");
  ThreadLock lock(file(thread_id, ".lock"));
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error("cannot open", path);
  try {
    write_all(fd, text, path);
    if (::fdatasync(fd) != 0) throw io_error("cannot fsync", path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

std::vector<nlohmann::json> FsStore::calls(std::string_view thread_id) {
  check_id(thread_id);
  std::vector<nlohmann::json> result;
  std::ifstream in(file(thread_id, ".calls.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    // A torn last line after a crash; or damage, nested deeper than the host writes.
    if (nested_deeper_than(line, kMaxJsonBracketNesting)) continue;
    auto trace = nlohmann::json::parse(line, nullptr, false);
    if (trace.is_discarded() || !trace.is_object()) continue;
    result.push_back(std::move(trace));
  }
  return result;
}

void FsStore::write_rendering(const Thread& thread, std::string_view text) {
  check_id(thread.id);
  std::string content(text);
  if (!content.empty() && content.back() != '\n') content += '\n';
  write_atomically(file(thread.id, ".txt"), content, /*durable=*/false);
}

}  // namespace luagent
