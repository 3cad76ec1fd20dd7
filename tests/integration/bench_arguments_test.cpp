// Every benchmark program checks its arguments before it starts anything: `peer_bench
// --help` read "--help" with atoi as 0 threads and waited forever for them to finish, and
// the benchmarks that take no argument ran in full whatever they were given.
#define BOOST_TEST_MODULE bench_arguments
#include <boost/test/unit_test.hpp>

#include <sstream>

#include "support/cli_runner.hpp"

using luagent::test::run_program;

namespace {

// Each bench answers at once; the bug was a bench that never ended.
constexpr std::chrono::seconds kPatience{30};

std::vector<std::string> bench_programs() {
  std::vector<std::string> names;
  std::istringstream list(LUAGENT_BENCH_PROGRAMS);  // "cold_start_bench,concurrency_bench,..."
  for (std::string name; std::getline(list, name, ',');)
    if (!name.empty()) names.push_back(name);
  return names;
}

void refused(const std::string& bench, const std::vector<std::string>& args,
             const std::string& why) {
  std::string shown = bench;
  for (const std::string& arg : args) shown += " '" + arg + "'";
  auto result = run_program(std::filesystem::path(LUAGENT_BENCH_DIR) / bench, args, {}, {},
                            "/dev/null", kPatience);
  BOOST_TEST(!result.timed_out, shown << " still ran after " << kPatience.count() << " s");
  BOOST_TEST(result.exit_code == 2, shown << " -> " << result.exit_code << ": " << result.err);
  BOOST_TEST(result.out.empty(), shown << " printed " << result.out);
  BOOST_TEST(result.err.starts_with("usage: " + bench), shown << " -> " << result.err);
  BOOST_TEST(result.err.find(why) != std::string::npos, shown << " -> " << result.err);
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_bench_refuses_an_argument_it_cannot_take) {
  std::vector<std::string> benches = bench_programs();
  BOOST_TEST_REQUIRE(benches.size() >= 9u);
  for (const std::string& bench : benches) {
    refused(bench, {"--help"}, "--help");
    refused(bench, {"1", "1", "1", "1", "1", "1"}, "takes ");
  }
}

BOOST_AUTO_TEST_CASE(numbers_out_of_range_or_not_whole_are_refused) {
  refused("peer_bench", {"0"}, "threads must be a whole number in [1, 1000000], not '0'");
  refused("peer_bench", {"10", "abc"}, "concurrency must be a whole number in [1, ");
  refused("peer_bench", {"10", "5", "99999999999999999999"}, "repeats must be a whole number");
  refused("concurrency_bench", {"10", "-1"}, "latency_ms must be a whole number in [0, ");
  refused("concurrency_bench", {"2.5"}, "runs must be a whole number in [1, ");
  refused("cold_start_bench", {"1x"}, "runs must be a whole number in [1, 10000], not '1x'");
  refused("cold_start_bench", {" 5"}, "runs must be a whole number");
  refused("frame_budget_bench", {"10", "2000", "floats"},
          "grinding must be integers or strings, not 'floats'");
  refused("frame_budget_bench", {"10", "-2000"}, "budget_us must be a whole number in [0, ");
  refused("lua_pattern_bench", {"luajit"}, "patterns must be lua or ours, not 'luajit'");
  refused("lua_pattern_bench", {"ours", "0"}, "rounds must be a whole number in [1, ");
  refused("store_bench", {"fs"}, "takes no arguments, not 'fs'");
}
