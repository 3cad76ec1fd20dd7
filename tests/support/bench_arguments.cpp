#include "support/bench_arguments.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace luagent::test {
namespace {

// The whole of `text` as a decimal integer (an optional '-', then digits), or false.
bool parse_integer(const std::string& text, long long& value) {
  std::size_t digits_from = !text.empty() && text[0] == '-' ? 1 : 0;
  if (text.size() == digits_from ||
      !std::all_of(text.begin() + static_cast<std::ptrdiff_t>(digits_from), text.end(),
                   [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  try {
    value = std::stoll(text);
  } catch (const std::out_of_range&) {
    return false;
  }
  return true;
}

[[noreturn]] void refuse(const std::string& program, const std::vector<BenchArgument>& expected,
                         const std::string& why) {
  std::string usage = "usage: " + program;
  for (const BenchArgument& argument : expected) {
    usage += " [" + argument.name + "=" + argument.fallback;
    for (std::size_t i = 1; i < argument.words.size(); ++i) usage += "|" + argument.words[i];
    usage += "]";
  }
  std::fprintf(stderr, "%s\n%s: %s\n", usage.c_str(), program.c_str(), why.c_str());
  std::exit(2);
}

}  // namespace

BenchArgument BenchArgument::integer(std::string name, long long fallback, long long low,
                                     long long high) {
  BenchArgument argument;
  argument.name = std::move(name);
  argument.fallback = std::to_string(fallback);
  argument.low = low;
  argument.high = high;
  return argument;
}

BenchArgument BenchArgument::word(std::string name, std::vector<std::string> words) {
  BenchArgument argument;
  argument.name = std::move(name);
  argument.fallback = words.at(0);
  argument.words = std::move(words);
  return argument;
}

BenchArguments::BenchArguments(int argc, char** argv, std::vector<BenchArgument> expected)
    : expected_(std::move(expected)) {
  std::string program = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : "bench";
  if (argc - 1 > static_cast<int>(expected_.size()))
    refuse(program, expected_,
           expected_.empty() ? "takes no arguments, not '" + std::string(argv[1]) + "'"
                             : "takes at most " + std::to_string(expected_.size()) +
                                   " arguments, not " + std::to_string(argc - 1));
  for (std::size_t i = 0; i < expected_.size(); ++i) {
    const BenchArgument& argument = expected_[i];
    std::string value = static_cast<int>(i) + 1 < argc ? argv[i + 1] : argument.fallback;
    if (!argument.words.empty()) {
      if (std::find(argument.words.begin(), argument.words.end(), value) == argument.words.end()) {
        std::string choices;
        for (std::size_t w = 0; w < argument.words.size(); ++w)
          choices += (w == 0                           ? ""
                      : w + 1 == argument.words.size() ? " or "
                                                       : ", ") +
                     argument.words[w];
        refuse(program, expected_, argument.name + " must be " + choices + ", not '" + value + "'");
      }
    } else {
      long long number = 0;
      if (!parse_integer(value, number) || number < argument.low || number > argument.high)
        refuse(program, expected_,
               argument.name + " must be a whole number in [" + std::to_string(argument.low) +
                   ", " + std::to_string(argument.high) + "], not '" + value + "'");
    }
    values_.push_back(std::move(value));
  }
}

std::size_t BenchArguments::index(const std::string& name) const {
  for (std::size_t i = 0; i < expected_.size(); ++i)
    if (expected_[i].name == name) return i;
  throw std::logic_error("the benchmark has no argument '" + name + "'");
}

long long BenchArguments::integer(const std::string& name) const {
  std::size_t i = index(name);
  if (!expected_[i].words.empty())
    throw std::logic_error("the benchmark's argument '" + name + "' is a word");
  return std::stoll(values_[i]);
}

const std::string& BenchArguments::word(const std::string& name) const {
  std::size_t i = index(name);
  if (expected_[i].words.empty())
    throw std::logic_error("the benchmark's argument '" + name + "' is a number");
  return values_[i];
}

}  // namespace luagent::test
