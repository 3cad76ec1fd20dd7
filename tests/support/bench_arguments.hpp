// The positional arguments of a benchmark program, checked before anything runs: a word
// where a number belongs (`peer_bench --help`) used to be read by atoi as 0 and the
// program waited forever for zero threads to finish.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace luagent::test {

/// One positional argument: a whole number within bounds, or one word of a list.
struct BenchArgument {
  /// A whole number in [low, high]; `fallback` when not given.
  static BenchArgument integer(std::string name, long long fallback, long long low, long long high);
  /// One of `words`; the first when not given.
  static BenchArgument word(std::string name, std::vector<std::string> words);

  std::string name;
  std::string fallback;            // as it would be typed
  long long low = 0, high = 0;     // an integer's bounds
  std::vector<std::string> words;  // a word's choices (empty: an integer)
};

/// The values of a benchmark's arguments, read from argv in the order `expected` lists
/// them; those not given take their default. A value that does not fit, or an argument
/// more than `expected` lists, prints the usage line and what was wrong on stderr and
/// exits the program with status 2.
class BenchArguments {
 public:
  BenchArguments(int argc, char** argv, std::vector<BenchArgument> expected);

  /// The value of the integer argument `name`.
  long long integer(const std::string& name) const;
  /// The value of the word argument `name`.
  const std::string& word(const std::string& name) const;

 private:
  std::size_t index(const std::string& name) const;

  std::vector<BenchArgument> expected_;
  std::vector<std::string> values_;
};

}  // namespace luagent::test
