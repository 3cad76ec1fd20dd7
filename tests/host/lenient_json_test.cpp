#define BOOST_TEST_MODULE lenient_json
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llm/lenient_json.hpp"
#include "luagent/error.hpp"
#include "support/test_paths.hpp"

using luagent::Error;
using luagent::ErrorCode;
using luagent::llm::LenientOptions;
using luagent::llm::parse_lenient_json;
using nlohmann::json;

namespace {

struct Case {
  const char* name;
  std::string input;
  const char* expected;               // the JSON value the parser must recover
  std::vector<std::string> mentions;  // substrings that must appear among the repairs
  bool clean = false;                 // true: no repairs at all (strict fast path)
  bool complete = true;
  int objects_found = 1;
};

std::string joined(const std::vector<std::string>& repairs) {
  std::string out;
  for (const auto& r : repairs) out += r + " | ";
  return out;
}

// The reply of a 12-factor calculator agent, as models really write it.
const std::string kCalculatorReply =
    "{\n  \"intent\": \"multiply\",\n  \"a\": 3,\n  \"b\": 4.5,\n  \"note\": \"3 times 4.5\"\n}";

const std::vector<Case> kCases = {
    {"strict object", R"({"a":1,"b":[true,null,"x"]})", R"({"a":1,"b":[true,null,"x"]})", {}, true},
    {"strict with surrounding whitespace", "\n\n  {\"a\": 1}\n  ", R"({"a":1})", {}, true},
    {"strict array", "[1, 2, 3]", "[1,2,3]", {}, true},
    {"strict scalar", "42", "42", {}, true},
    // Every way a JSON value can start takes the strict path (it is skipped only where no
    // value can start, as before a fence).
    {"strict after a byte order mark", "\xEF\xBB\xBF {\"a\": 1}", R"({"a":1})", {}, true},
    {"strict string", "\t\"hi\"", R"("hi")", {}, true},
    {"strict negative number", "-1.5e2", "-150.0", {}, true},
    {"strict literals", "\r\n[true, false, null]", "[true,false,null]", {}, true},
    {"fenced json after Sure!",
     "Sure! Here is the JSON:\n\n```json\n{\"intent\": \"add\", \"a\": 1, \"b\": 2}\n```",
     R"({"intent":"add","a":1,"b":2})",
     {"removed markdown fence"}},
    {"bare fence", "```\n{\"a\": 1}\n```\n", R"({"a":1})", {"removed markdown fence"}},
    {"uppercase tag and prose after fence",
     "Here you go:\n```JSON\n[{\"x\": 1}]\n```\nLet me know if you need anything else!",
     R"([{"x":1}])",
     {"removed markdown fence"}},
    {"fence cut off by the stream",
     "```json\n{\"a\": 1, \"b\": \"two\"}\n",
     R"({"a":1,"b":"two"})",
     {"removed markdown fence"}},
    {"indented fence in a list",
     "1. The result:\n   ```json\n   {\"ok\": true}\n   ```",
     R"({"ok":true})",
     {"removed markdown fence"}},
    {"json block preferred over python block",
     "```python\nx = {'a': 0}\n```\nand the answer:\n```json\n{\"a\": 1}\n```",
     R"({"a":1})",
     {"removed markdown fence"}},
    {"prose before and after",
     "The answer is {\"a\": 1}. Hope this helps!",
     R"({"a":1})",
     {"skipped text before the JSON", "skipped text after the JSON"}},
    {"trailing comma in object", "{\"a\":1,}", R"({"a":1})", {"removed trailing comma at 1:7"}},
    {"trailing comma in array", "[1,2,]", "[1,2]", {"removed trailing comma at 1:5"}},
    {"trailing commas counted",
     "{\n  \"a\": [1, 2,],\n  \"b\": {\"c\": 3,},\n}",
     R"({"a":[1,2],"b":{"c":3}})",
     {"removed 3 trailing commas (first at 2:13)"}},
    {"line comment",
     "{\n  \"a\": 1, // the first\n  \"b\": 2\n}",
     R"({"a":1,"b":2})",
     {"removed comment at 2:11"}},
    {"block comment", "{\"a\": /* inline */ 1}", R"({"a":1})", {"removed comment"}},
    {"hash comment", "{\n  # why: because\n  \"a\": 1\n}", R"({"a":1})", {"removed comment"}},
    {"single quotes",
     "{'a': 'it is', 'b': \"mixed\"}",
     R"({"a":"it is","b":"mixed"})",
     {"converted 3 single-quoted strings"}},
    {"escaped single quote", R"({'it\'s': 'x'})", R"({"it's":"x"})", {"single-quoted"}},
    {"unquoted keys",
     "{a: 1, b_c: \"x\", $d: 2}",
     R"({"a":1,"b_c":"x","$d":2})",
     {"quoted 3 unquoted keys (first at 1:2)"}},
    {"python literals",
     "{\"a\": True, \"b\": False, \"c\": None}",
     R"({"a":true,"b":false,"c":null})",
     {"non-JSON literals"}},
    {"raw newline in string",
     "{\"text\": \"line one\nline two\"}",
     R"({"text":"line one\nline two"})",
     {"raw newline"}},
    {"raw tab in string", "{\"t\": \"a\tb\"}", R"({"t":"a\tb"})", {"control character"}},
    {"crlf and trailing comma", "{\r\n  \"a\": 1,\r\n}\r\n", R"({"a":1})", {"trailing comma"}},
    {"cut inside a string",
     "{\"a\": \"hel",
     R"({"a":"hel"})",
     {"reply was cut off", "unterminated string"},
     false,
     false},
    {"cut after a key",
     "{\"a\": 1, \"b\"",
     R"({"a":1})",
     {"dropped dangling key \"b\""},
     false,
     false},
    {"cut after a colon",
     "{\"a\": 1, \"b\":",
     R"({"a":1})",
     {"dropped dangling key \"b\""},
     false,
     false},
    {"cut inside a key", "{\"a\": 1, \"lon", R"({"a":1})", {"reply was cut off"}, false, false},
    {"cut in a nested literal",
     "{\"a\": [1, 2, {\"b\": tr",
     R"({"a":[1,2,{}]})",
     {"closed 3 open brackets", "dropped dangling key \"b\""},
     false,
     false},
    {"cut inside an array literal",
     "[true, fal",
     "[true]",
     {"closed 1 open bracket"},
     false,
     false},
    {"cut inside an escape", R"({"a": "x\u00)", R"({"a":"x"})", {}, false, false},
    {"cut after a minus", "{\"n\": -", "{}", {"dropped dangling key \"n\""}, false, false},
    {"cut inside a multi-byte character", "{\"t\": \"18\xC2", R"({"t":"18"})", {}, false, false},
    {"two objects",
     "{\"a\": 1}\n{\"b\": 2}",
     R"({"a":1})",
     {"reply held 2 JSON objects; used the first"},
     false,
     true,
     2},
    {"two fenced objects",
     "```json\n{\"a\": 1}\n```\nor\n```json\n{\"a\": 2}\n```",
     R"({"a":1})",
     {"removed markdown fence", "reply held 2 JSON objects"},
     false,
     true,
     2},
    {"think preamble with braces",
     "<think>The user wants {x}. Maybe {\"a\": 0}? No.</think>\n{\"a\": 1}",
     R"({"a":1})",
     {"removed <think> block"}},
    {"close tag only (open tag was in the template)",
     "the user wants {\"a\": 0} maybe\n</think>\n\n{\"a\": 1}",
     R"({"a":1})",
     {"removed reasoning before </think>"}},
    {"think then fence",
     "<think>\nLet me compute 3*4.\n</think>\nSure! Here is the JSON:\n```json\n{\"intent\": "
     "\"multiply\", \"a\": 3, \"b\": 4}\n```",
     R"({"intent":"multiply","a":3,"b":4})",
     {"removed <think> block", "removed markdown fence"}},
    {"citation array before the object",
     "As noted in [1], the answer is:\n{\"a\": 1}",
     R"({"a":1})",
     {"skipped text before the JSON"}},
    {"placeholder braces in prose",
     "Fill in {name} and {} then: {\"name\": \"Ada\"}",
     R"({"name":"Ada"})",
     {"skipped text before the JSON"}},
    {"missing comma between members",
     "{\"a\": 1\n \"b\": 2}",
     R"({"a":1,"b":2})",
     {"inserted missing comma at 2:2"}},
    {"missing comma between elements",
     "[{\"a\": 1} {\"a\": 2}]",
     R"([{"a":1},{"a":2}])",
     {"inserted missing comma"}},
    {"NaN and Infinity",
     "{\"a\": NaN, \"b\": -Infinity}",
     R"({"a":null,"b":null})",
     {"non-finite numbers"}},
    {"non-JSON numbers",
     "{\"a\": +1, \"b\": .5, \"c\": 1., \"d\": 007}",
     R"({"a":1,"b":0.5,"c":1,"d":7})",
     {"normalised 4 non-JSON numbers"}},
    {"big and small numbers",
     "{\"u\": 18446744073709551615, \"f\": 1e-400, \"e\": 2.5E3,}",
     R"({"u":18446744073709551615,"f":0.0,"e":2500.0})",
     {"trailing comma"}},
    {"windows path with invalid escapes",
     R"({'path': 'C:\Users\dan'})",
     R"({"path":"C:\\Users\\dan"})",
     {"kept the backslash of 2 invalid escapes"}},
    {"surrogate pair escape",
     R"({'e': "\ud83d\ude00"})",
     "{\"e\":\"\xF0\x9F\x98\x80\"}",
     {"single-quoted"}},
    {"lone surrogate", R"({'e': "\ud83d!"})", "{\"e\":\"\xEF\xBF\xBD!\"}", {"invalid escape"}},
    {"invalid UTF-8 byte",
     "{'t': \"a\xFF\x62\"}",
     "{\"t\":\"a\xEF\xBF\xBD\x62\"}",
     {"replaced invalid UTF-8 byte"}},
    {"bare word value",
     "{\"intent\": multiply, \"a\": 3}",
     R"({"intent":"multiply","a":3})",
     {"quoted bare word value at 1:12"}},
    {"mismatched closer", "{\"a\": [1, 2}", R"({"a":[1,2]})", {"bracket left open"}},
    {"wrong closer for the only bracket",
     "{\"a\": 1]",
     R"({"a":1})",
     {"mismatched closing bracket"}},
    {"duplicate key", "{\"a\": 1, \"a\": 2,}", R"({"a":2})", {"kept the last of duplicate key"}},
    {"empty value", "{\"a\": , \"b\": 1}", R"({"b":1})", {"removed empty value"}},
    {"single-quoted scalar", "'hello'", R"("hello")", {"single-quoted"}},
    {"python scalar", "  True\n", "true", {"non-JSON literal"}},
    {"object beats a later array",
     "{\"a\": \"x\"} and also [1, 2]",
     R"({"a":"x"})",
     {"skipped text after the JSON"}},
    {"calculator reply with trailing comma in fence",
     "I'll multiply these.\n\n```json\n{\n  \"intent\": \"multiply\",\n  \"a\": 3,\n  \"b\": "
     "4,\n}\n"
     "```",
     R"({"intent":"multiply","a":3,"b":4})",
     {"removed markdown fence", "trailing comma at 7:9"}},
    {"harmony channel markers",
     "<|channel|>final<|message|>{\"a\": 1}",
     R"({"a":1})",
     {"skipped text before the JSON"}},
    {"garbage after the object",
     "{\"a\": 1} }]) trailing",
     R"({"a":1})",
     {"skipped text after the JSON"}},
    {"realistic calculator object, strict",
     kCalculatorReply,
     R"({"intent":"multiply","a":3,"b":4.5,"note":"3 times 4.5"})",
     {},
     true},
};

}  // namespace

BOOST_AUTO_TEST_CASE(table_of_model_outputs) {
  BOOST_TEST(kCases.size() >= 40u);
  for (const Case& c : kCases) {
    BOOST_TEST_CONTEXT("case: " << c.name << "\ninput: " << c.input) {
      luagent::llm::LenientResult result;
      try {
        result = parse_lenient_json(c.input);
      } catch (const Error& error) {
        BOOST_ERROR("threw: " << error.what());
        continue;
      }
      BOOST_TEST(result.value == json::parse(c.expected),
                 "got " << result.value.dump() << ", expected " << c.expected);
      std::string repairs = joined(result.repairs);
      for (const auto& mention : c.mentions)
        BOOST_TEST(repairs.find(mention) != std::string::npos,
                   "repairs lack \"" << mention << "\": " << repairs);
      if (c.clean) BOOST_TEST(result.repairs.empty(), "unexpected repairs: " << repairs);
      if (!c.clean && c.mentions.empty() && c.complete)
        BOOST_TEST(!result.repairs.empty(), "a repaired input must say what changed");
      BOOST_TEST(result.complete == c.complete);
      BOOST_TEST(result.objects_found == c.objects_found);
      // Whatever was recovered must serialise: no invalid UTF-8 slips through.
      BOOST_CHECK_NO_THROW(result.value.dump());
    }
  }
}

BOOST_AUTO_TEST_CASE(nothing_recoverable_is_invalid_output_saying_why) {
  struct Bad {
    std::string input;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {"", "empty"},
      {"   \n\t", "empty"},
      {"I cannot help with that request.", "no JSON object or array"},
      {"{name, age}", "expected ':' after key \"name\""},
      {"<think>Let me think about {this} carefully", "inside a <think> block"},
      {"[1, 2 3 @]", "at 1:"},
  };
  for (const Bad& b : bad) {
    BOOST_TEST_CONTEXT("input: " << b.input) {
      try {
        parse_lenient_json(b.input);
        BOOST_ERROR("did not throw");
      } catch (const Error& error) {
        BOOST_TEST(error.code() == ErrorCode::invalid_output);
        BOOST_TEST(error.message().find(b.says) != std::string::npos, error.message());
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(size_and_depth_limits_are_errors_of_kind_limit) {
  LenientOptions small;
  small.max_bytes = 16;
  try {
    parse_lenient_json(R"({"a": "0123456789abcdef"})", small);
    BOOST_ERROR("size limit not enforced");
  } catch (const Error& error) {
    BOOST_TEST(error.code() == ErrorCode::limit);
  }

  std::string at_limit = std::string(128, '[') + std::string(128, ']');
  BOOST_TEST(parse_lenient_json(at_limit).value.is_array());
  // Both the strict path and the lenient path refuse one level more.
  for (std::string deep : {std::string(129, '[') + std::string(129, ']'),
                           std::string(129, '[') + "1,]" + std::string(128, ']'), [] {
                             std::string s;
                             for (int i = 0; i < 100000; ++i) s += "{\"a\":";
                             return s;
                           }()}) {
    try {
      parse_lenient_json(deep);
      BOOST_ERROR("depth limit not enforced");
    } catch (const Error& error) {
      BOOST_TEST(error.code() == ErrorCode::limit);
      BOOST_TEST(error.message().find("deeper than 128") != std::string::npos);
    }
  }
}

namespace {

// True when `partial` could grow into `full`: the streaming guarantee callers rely on.
bool grows_into(const json& partial, const json& full) {
  if (partial.is_object()) {
    if (!full.is_object()) return false;
    for (const auto& [key, value] : partial.items())
      if (!full.contains(key) || !grows_into(value, full[key])) return false;
    return true;
  }
  if (partial.is_array()) {
    if (!full.is_array() || partial.size() > full.size()) return false;
    for (std::size_t i = 0; i < partial.size(); ++i)
      if (!grows_into(partial[i], full[i])) return false;
    return true;
  }
  if (partial.is_string())
    return full.is_string() && full.get<std::string>().rfind(partial.get<std::string>(), 0) == 0;
  if (partial.is_number())  // "4" may become 4.5 and "-" nothing at all
    return full.is_number() && full.dump().rfind(partial.dump().substr(0, 1), 0) == 0;
  return partial == full;
}

void check_every_prefix(const std::string& text) {
  json full = parse_lenient_json(text).value;
  std::size_t first_brace = text.find('{');
  for (std::size_t cut = first_brace + 1; cut <= text.size(); ++cut) {
    std::string prefix = text.substr(0, cut);
    BOOST_TEST_CONTEXT("prefix: " << prefix) {
      luagent::llm::LenientResult partial;
      BOOST_REQUIRE_NO_THROW(partial = parse_lenient_json(prefix));
      BOOST_TEST(partial.value.is_object());
      BOOST_TEST(grows_into(partial.value, full), partial.value.dump() << " vs " << full.dump());
      if (cut < text.find_last_of('}') + 1) BOOST_TEST(!partial.complete);
    }
  }
}

// The assistant text of a recorded OpenAI JSON-mode stream, reassembled from its SSE chunks.
std::string recorded_json_mode_reply() {
  std::ifstream in(luagent::test::fixtures_dir() /
                   "llm-wire/openai-chat/json_object_stream.response.sse");
  BOOST_REQUIRE(in.good());
  std::string line, text;
  while (std::getline(in, line)) {
    if (line.rfind("data: {", 0) != 0) continue;
    json chunk = json::parse(line.substr(6));
    for (const auto& choice : chunk["choices"])
      if (choice["delta"].contains("content") && choice["delta"]["content"].is_string())
        text += choice["delta"]["content"].get<std::string>();
  }
  return text;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_prefix_of_a_calculator_reply_parses) {
  check_every_prefix(kCalculatorReply);
  check_every_prefix("Sure! Here is the JSON:\n```json\n" + kCalculatorReply + "\n```");
}

BOOST_AUTO_TEST_CASE(every_prefix_of_a_recorded_json_mode_stream_parses) {
  std::string reply = recorded_json_mode_reply();
  BOOST_TEST(reply.size() > 300u);
  BOOST_TEST(parse_lenient_json(reply).value["weather"]["temperature"] ==
             "18\xC2\xB0"
             "C");
  check_every_prefix(reply);
}

BOOST_AUTO_TEST_CASE(one_mebibyte_of_strict_json_takes_the_fast_path) {
  json big = json::array();
  while (big.dump().size() < (std::size_t{1} << 20)) {
    for (int i = 0; i < 500; ++i)
      big.push_back({{"id", i},
                     {"name", "item number " + std::to_string(i)},
                     {"ok", i % 2 == 0},
                     {"tags", {"a", "b"}}});
  }
  std::string text = big.dump(2);
  BOOST_TEST(text.size() >= (std::size_t{1} << 20));
  auto result = parse_lenient_json(text);
  BOOST_TEST(result.repairs.empty());
  BOOST_TEST(result.complete);
  BOOST_TEST(result.value == big);
  // The same megabyte with a trailing comma goes the lenient way and still comes back whole.
  std::string lenient = text.substr(0, text.size() - 1) + ",]";
  auto repaired = parse_lenient_json(lenient);
  BOOST_TEST(repaired.value == big);
  BOOST_TEST(joined(repaired.repairs).find("trailing comma") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(prose_full_of_brackets_stays_bounded) {
  // Thousands of failing candidates: must end (quickly) with a clear error, not hang.
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "{a b [c @ ";
  try {
    parse_lenient_json(text);
    BOOST_ERROR("did not throw");
  } catch (const Error& error) {
    BOOST_TEST(error.code() == ErrorCode::invalid_output);
  }
}
