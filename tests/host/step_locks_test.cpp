// Step locks: the mark of a step in flight that other processes see (host/step_locks.hpp),
// and what Host::resume does with an answer while another process holds the thread.
#define BOOST_TEST_MODULE step_locks
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <fstream>
#include <thread>

#include "luagent/luagent.hpp"
#include "step_locks.hpp"
#include "store/store.hpp"
#include "support/test_paths.hpp"

using namespace luagent;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(a_thread_held_by_one_holder_is_refused_to_another_until_released) {
  test::TempDir dir;
  StepLocks first(dir / "steps"), second(dir / "steps");  // two open files: two processes
  BOOST_TEST(first.try_hold("th_a"));
  BOOST_TEST(!second.try_hold("th_a"));
  BOOST_TEST(second.try_hold("th_b"));  // other threads are free
  BOOST_TEST(first.try_hold("th_a"));   // counted: a second hold of the same holder
  first.release("th_a");
  BOOST_TEST(!second.try_hold("th_a"));  // one hold is left
  first.release("th_a");
  BOOST_TEST(second.try_hold("th_a"));
  BOOST_TEST(!first.try_hold("th_b"));
}

BOOST_AUTO_TEST_CASE(a_holder_that_goes_away_leaves_nothing_held) {
  test::TempDir dir;
  StepLocks survivor(dir / "steps");
  {
    StepLocks crashed(dir / "steps");
    BOOST_TEST(crashed.try_hold("th_a"));
  }  // its descriptor closes, as when its process dies
  BOOST_TEST(survivor.try_hold("th_a"));
}

BOOST_AUTO_TEST_CASE(an_unusable_lock_file_is_an_io_error_that_names_it) {
  test::TempDir dir;
  StepLocks locks(dir / "missing-folder" / "steps");  // the folder, not its parent, is made
  try {
    locks.try_hold("th_a");
    BOOST_FAIL("a lock file in a missing folder was used");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::io));
    BOOST_TEST(std::string(e.what()).find("missing-folder/steps/") != std::string::npos, e.what());
  }
}

namespace {

// A host with an agent that waits for a human, and a thread of it waiting; `held` stands
// for another process that holds the thread (its step that paused it still finishing).
struct WaitingThread {
  test::TempDir dir;
  std::unique_ptr<Host> host;
  std::unique_ptr<Store> store;
  std::string id;

  WaitingThread() {
    std::filesystem::create_directories(dir / "asker");
    std::ofstream(dir / "asker/agent.lua")
        << "return function(thread) return thread:await('human') end";
    HostConfig config;
    config.store = "sqlite:" + (dir / "t.db").string();
    config.agents_dir = dir.path();
    host = std::make_unique<Host>(config);
    id = host->launch("asker", Event::user("go"));
    host->run_until_idle();
    store = open_store(config.store);
  }
  // The answer another process gives while it holds the thread.
  void answer_elsewhere(const std::string& key) {
    Event answer = Event::make("human_response", "from elsewhere");
    answer.key = key;
    store->append(id, store->load(id).version(), {answer});
  }
};

}  // namespace

// The other process takes an answer while this one waits for its lock: this answer is
// judged again against the thread as it is then. The same answer (same key) is a replay
// of it; another is refused, as the thread waits no more; nothing runs here.
BOOST_AUTO_TEST_CASE(an_answer_waiting_for_the_lock_sees_the_thread_move_on) {
  for (const std::string key : {"k1", "k2"}) {
    WaitingThread waiting;
    StepLocks other(waiting.dir / "t.db-steps");
    BOOST_REQUIRE(other.try_hold(waiting.id));
    std::thread elsewhere([&] {
      std::this_thread::sleep_for(100ms);
      waiting.answer_elsewhere("k1");
    });
    auto answer = Resume::with_event("human_response", "from elsewhere", key);
    try {
      ResumeResult result = waiting.host->resume(waiting.id, answer);
      BOOST_TEST(key == "k1");
      BOOST_TEST(result.replayed);
    } catch (const Error& e) {
      BOOST_TEST(key == "k2", e.what());
      BOOST_TEST((e.code() == ErrorCode::conflict));
      BOOST_TEST(std::string(e.what()).find("is not awaiting a human response (it is running)") !=
                     std::string::npos,
                 e.what());
    }
    elsewhere.join();
    BOOST_TEST(waiting.host->get(waiting.id).events.size() == 3u);  // user, await, the answer
  }
}

// Held past the wait (a step that never lets go): a conflict that says where it is.
BOOST_AUTO_TEST_CASE(an_answer_to_a_thread_held_past_the_wait_is_a_conflict) {
  WaitingThread waiting;
  StepLocks other(waiting.dir / "t.db-steps");
  BOOST_REQUIRE(other.try_hold(waiting.id));
  auto started = std::chrono::steady_clock::now();
  try {
    waiting.host->resume(waiting.id, Resume::say("hello"));
    BOOST_FAIL("answered a thread another process holds");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::conflict));
    BOOST_TEST(std::string(e.what()).find("in flight in another process") != std::string::npos,
               e.what());
  }
  BOOST_TEST((std::chrono::steady_clock::now() - started >= 1s));  // it waited
  BOOST_TEST(waiting.host->get(waiting.id).events.size() == 2u);
  other.release(waiting.id);
  waiting.host->resume(waiting.id, Resume::say("hello"));
  waiting.host->run_until_idle();
  BOOST_TEST(waiting.host->get(waiting.id).status() == Status::awaiting_human);
}
