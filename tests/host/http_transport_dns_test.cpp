// A call whose host name is still being looked up when it ends (cancelled, or the host
// shuts down) must not hold the loop until the lookup returns: libcurl's threaded
// resolver would otherwise wait for its lookup thread, for as long as the system's
// resolver takes (seconds, with an unreachable DNS server). This executable interposes
// getaddrinfo, which libcurl's lookup thread calls, so that one name takes two seconds to
// fail; every other name goes to the real one.
#define BOOST_TEST_MODULE http_transport_dns
#include <dlfcn.h>
#include <netdb.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>

#include "event_loop.hpp"
#include "llm/http_transport.hpp"

using namespace std::chrono_literals;

namespace {
constexpr const char* kSlowName = "slow-lookup.luagent.test";
constexpr auto kSlowLookup = 2s;
}  // namespace

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                           addrinfo** result) {
  if (node && std::strcmp(node, kSlowName) == 0) {
    std::this_thread::sleep_for(kSlowLookup);
    return EAI_NONAME;
  }
  using Real = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static const auto real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "getaddrinfo"));
  return real(node, service, hints, result);
}

namespace {

using Clock = std::chrono::steady_clock;

struct Client {
  luagent::EventLoop loop;
  luagent::llm::HttpTransport transport;
  Client() { loop.add_driver(&transport); }
  ~Client() { loop.remove_driver(&transport); }
};

// Starts a transfer to the slow name and drives the loop until its lookup has begun.
luagent::llm::TransferId start_slow_lookup(Client& client, std::optional<luagent::Error>& ended,
                                           bool& done) {
  luagent::llm::HttpRequest request;
  request.url = std::string("http://") + kSlowName + ":8080/v1/chat/completions";
  request.body = "{}";
  luagent::llm::HttpHandlers handlers;
  handlers.on_done = [&](std::optional<luagent::Error> error) {
    ended = std::move(error);
    done = true;
  };
  auto id = client.transport.start(std::move(request), std::move(handlers));
  for (auto until = Clock::now() + 200ms; Clock::now() < until;)
    client.loop.turn(std::chrono::milliseconds(10));
  return id;
}

}  // namespace

BOOST_AUTO_TEST_CASE(cancelling_a_call_during_its_name_lookup_does_not_wait_for_the_lookup) {
  Client client;
  std::optional<luagent::Error> ended;
  bool done = false;
  auto id = start_slow_lookup(client, ended, done);
  BOOST_REQUIRE(!done);  // still looking the name up
  client.transport.cancel(id);
  auto started = Clock::now();
  client.loop.turn(std::chrono::milliseconds(0));
  auto took = Clock::now() - started;
  BOOST_TEST(done);
  BOOST_TEST((ended && ended->code() == luagent::ErrorCode::cancelled));
  // Without the fix the turn took the rest of the two-second lookup.
  BOOST_TEST(took < 500ms, std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                               << " ms for the turn that delivered the cancel");
}

BOOST_AUTO_TEST_CASE(destroying_a_transport_during_a_name_lookup_does_not_wait_for_it) {
  auto client = std::make_unique<Client>();
  std::optional<luagent::Error> ended;
  bool done = false;
  start_slow_lookup(*client, ended, done);
  BOOST_REQUIRE(!done);
  auto started = Clock::now();
  client.reset();
  auto took = Clock::now() - started;
  BOOST_TEST(took < 500ms, std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                               << " ms to destroy the transport");
}
