// Thread ids: file-name safe, unguessable, and sorted by creation time (the SQLite store
// relies on the order to keep threads in flight together on the same B-tree pages).
#define BOOST_TEST_MODULE thread_id
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "luagent/thread.hpp"

using luagent::new_thread_id;
using luagent::now_ms;

namespace {

constexpr std::string_view kAlphabet = "234567abcdefghijklmnopqrstuvwxyz";

// The milliseconds the id's 9 time characters spell.
std::int64_t created_ms_of(const std::string& id) {
  std::int64_t ms = 0;
  for (char c : id.substr(3, 9)) ms = ms * 32 + static_cast<std::int64_t>(kAlphabet.find(c));
  return ms;
}

}  // namespace

BOOST_AUTO_TEST_CASE(ids_are_th_and_22_characters_of_the_sorted_base32_alphabet) {
  for (int i = 0; i < 1000; ++i) {
    std::string id = new_thread_id();
    BOOST_REQUIRE_EQUAL(id.size(), 25u);
    BOOST_REQUIRE_EQUAL(id.substr(0, 3), "th_");
    BOOST_REQUIRE_EQUAL(id.find_first_not_of(kAlphabet, 3), std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(ids_begin_with_their_creation_time) {
  std::int64_t before = now_ms();
  std::string id = new_thread_id();
  std::int64_t after = now_ms();
  BOOST_TEST(created_ms_of(id) >= before);
  BOOST_TEST(created_ms_of(id) <= after);
}

BOOST_AUTO_TEST_CASE(an_id_made_later_sorts_after_every_earlier_one) {
  std::string earlier = new_thread_id();
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::string later = new_thread_id();
    BOOST_TEST(earlier < later);
    earlier = later;
  }
}

BOOST_AUTO_TEST_CASE(ids_made_in_the_same_millisecond_still_differ) {
  std::set<std::string> ids, random_parts;
  for (int i = 0; i < 20000; ++i) {
    std::string id = new_thread_id();
    ids.insert(id);
    random_parts.insert(id.substr(12));
  }
  BOOST_TEST(ids.size() == 20000u);
  BOOST_TEST(random_parts.size() == 20000u);
}
