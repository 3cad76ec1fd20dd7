// Fuzzes the thread JSON reader (luagent show --format json output read back, the fs
// store's files, resume --event): any input must end in a value or a luagent::Error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "luagent/error.hpp"
#include "luagent/thread.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  try {
    luagent::Thread thread = luagent::thread_from_json(json);
    (void)luagent::to_json(thread).dump();
  } catch (const luagent::Error&) {
  }
  try {
    luagent::Event event = luagent::event_from_json(json);
    (void)luagent::to_json(event);
  } catch (const luagent::Error&) {
  }
  return 0;
}
