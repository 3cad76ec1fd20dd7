#define BOOST_TEST_MODULE json_schema
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llm/json_schema.hpp"
#include "llm/structured_output.hpp"
#include "luagent/error.hpp"

using luagent::Error;
using luagent::ErrorCode;
using luagent::llm::coerce_and_validate;
using luagent::llm::CompiledSchema;
using luagent::llm::expand_schema;
using luagent::llm::one_of_intents;
using luagent::llm::parse_structured_output;
using nlohmann::json;

namespace {

// The calculator's intents from DESIGN.md, as the Lua binding hands them over.
const json kIntents = json::parse(R"({
  "add": {"a": "number", "b": "number"},
  "divide": {"a": "number", "b": "number"},
  "multiply": {"a": "number", "b": "number"},
  "request_more_information": {"message": "string"},
  "done_for_now": {"message": "string"}
})");

// Runs `fn` and returns the Error it threw; fails the test when nothing was thrown.
template <typename Fn>
Error thrown_by(Fn&& fn) {
  try {
    fn();
  } catch (const Error& error) {
    return error;
  }
  BOOST_FAIL("expected a luagent::Error");
  return Error(ErrorCode::internal, "unreachable");
}

// What coerce_and_validate made of a value: the value and its repair notes, or the error.
struct Checked {
  json value;
  std::vector<std::string> repairs;
  std::optional<Error> error;
};

template <typename Schema>
Checked check(json value, const Schema& schema) {
  Checked checked;
  try {
    coerce_and_validate(value, schema, checked.repairs);
  } catch (const Error& error) {
    checked.error = error;
  }
  checked.value = std::move(value);
  return checked;
}

// Validates against the schema and against its compiled form, which must agree in every
// value, note and error; a reply the compiled form lets through as it is must be one the
// full validation accepts unchanged.
Checked check_both(const json& value, const json& schema) {
  Checked plain = check(value, schema);
  CompiledSchema compiled(schema);
  Checked fast = check(value, compiled);
  BOOST_TEST(fast.value == plain.value);
  BOOST_TEST(fast.repairs == plain.repairs, "repairs differ");
  BOOST_TEST(fast.error.has_value() == plain.error.has_value());
  if (fast.error && plain.error) {
    BOOST_TEST(static_cast<int>(fast.error->code()) == static_cast<int>(plain.error->code()));
    BOOST_TEST(fast.error->message() == plain.error->message());
  }
  if (compiled.fits_as_is(value)) {
    BOOST_TEST(!plain.error.has_value(),
               "fits_as_is, yet: " << (plain.error ? plain.error->message() : ""));
    BOOST_TEST(plain.repairs.empty());
    BOOST_TEST(plain.value == value);
  }
  return plain;
}

json validated(json value, const json& schema, std::vector<std::string>* repairs = nullptr) {
  Checked checked = check_both(value, schema);
  if (checked.error) throw *checked.error;
  if (repairs) *repairs = checked.repairs;
  return checked.value;
}

std::string invalid_message(json value, const json& schema) {
  Checked checked = check_both(value, schema);
  BOOST_REQUIRE(checked.error.has_value());
  BOOST_TEST(checked.error->code() == ErrorCode::invalid_output);
  return checked.error->message();
}

}  // namespace

BOOST_AUTO_TEST_CASE(short_form_record_expands_to_strict_object) {
  json schema = expand_schema(json::parse(R"({"a": "number", "b": "string?"})"));
  BOOST_TEST(schema == json::parse(R"({
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": ["string", "null"]}},
    "required": ["a"],
    "additionalProperties": false})"));
}

BOOST_AUTO_TEST_CASE(short_form_nesting_lists_aliases_and_optional_keys) {
  json schema = expand_schema(json::parse(R"({
    "user": {"name": "string", "age": "int"},
    "tags": ["string"],
    "scores": "float[]",
    "address?": {"city": "string"},
    "extra": "any",
    "meta": {},
    "flag": "bool"})"));
  BOOST_TEST(schema["required"] ==
             json::parse(R"(["extra","flag","meta","scores","tags","user"])"));
  BOOST_TEST(schema["properties"]["user"]["properties"]["age"] ==
             json::parse(R"({"type":"integer"})"));
  BOOST_TEST(schema["properties"]["user"]["required"] == json::parse(R"(["age","name"])"));
  BOOST_TEST(schema["properties"]["tags"] ==
             json::parse(R"({"type":"array","items":{"type":"string"}})"));
  BOOST_TEST(schema["properties"]["scores"] ==
             json::parse(R"({"type":"array","items":{"type":"number"}})"));
  BOOST_TEST(schema["properties"]["address"]["type"] == json::parse(R"(["object","null"])"));
  BOOST_TEST(schema["properties"]["extra"] == json::object());
  BOOST_TEST(schema["properties"]["meta"] == json::parse(R"({"type":"object"})"));
  BOOST_TEST(schema["properties"]["flag"] == json::parse(R"({"type":"boolean"})"));
  BOOST_TEST(expand_schema("string") == json::parse(R"({"type":"string"})"));
}

BOOST_AUTO_TEST_CASE(full_schema_passes_through_with_short_forms_inside) {
  json schema = expand_schema(json::parse(R"({
    "type": "object",
    "properties": {"color": {"enum": ["red", "green"]}, "n": "integer", "list": ["number"]},
    "required": ["color"]})"));
  BOOST_TEST(schema["required"] == json::parse(R"(["color"])"));
  BOOST_TEST(schema["properties"]["n"] == json::parse(R"({"type":"integer"})"));
  BOOST_TEST(schema["properties"]["list"]["items"] == json::parse(R"({"type":"number"})"));
  BOOST_TEST(!schema.contains("additionalProperties"));
  // A keyword beside a field name is read as fields: "type" is then just a field.
  json record = expand_schema(json::parse(R"({"type": "string", "name": "string"})"));
  BOOST_TEST(record["properties"].contains("type"));
  BOOST_TEST(record["properties"].contains("name"));
  // Fields named like annotations only (title, description) stay fields too.
  json todo = expand_schema(json::parse(R"({"title": "string", "description": "string?"})"));
  BOOST_TEST(todo["required"] == json::parse(R"(["title"])"));
}

BOOST_AUTO_TEST_CASE(bad_short_forms_name_the_path) {
  struct Bad {
    const char* schema;
    const char* says;
  };
  for (const Bad& bad : std::vector<Bad>{
           {R"({"a": "number", "b": "nubmer"})", "schema.b: unknown type 'nubmer'"},
           {R"({"user": {"age": "innt"}})", "schema.user.age: unknown type 'innt'"},
           {R"({"tags": ["strin"]})", "schema.tags[]: unknown type 'strin'"},
           {R"({"tags": ["string", "number"]})", "schema.tags: a list schema holds exactly one"},
           {R"({"n": 5})", "schema.n: expected a type name"},
           {R"({"type": "nubmer"})", "schema.type: unknown type \"nubmer\""},
           {R"({"type": "object", "properties": {"x": "wat"}})", "schema.x: unknown type 'wat'"},
           {R"({"enum": []})", "schema.enum: expected a non-empty list"},
           {"null", "schema: expected a type name"},
       }) {
    BOOST_TEST_CONTEXT(bad.schema) {
      Error error = thrown_by([&] { expand_schema(json::parse(bad.schema)); });
      BOOST_TEST(error.code() == ErrorCode::usage);
      BOOST_TEST(error.message().find(bad.says) != std::string::npos, error.message());
    }
  }
  json deep = "string";
  for (int i = 0; i < 100; ++i) deep = json{{"x", deep}};
  BOOST_TEST(thrown_by([&] { expand_schema(deep); }).code() == ErrorCode::limit);
}

BOOST_AUTO_TEST_CASE(one_of_intents_builds_a_branch_per_intent) {
  json schema = one_of_intents(kIntents);
  BOOST_REQUIRE(schema["oneOf"].is_array());
  BOOST_TEST(schema["oneOf"].size() == 5u);
  const json& add = schema["oneOf"][0];
  BOOST_TEST(add == json::parse(R"({
    "type": "object",
    "properties": {"intent": {"type": "string", "const": "add"},
                   "a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["intent", "a", "b"],
    "additionalProperties": false})"));
  json empty_fields = one_of_intents(json::parse(R"({"stop": {}, "go": []})"));
  BOOST_TEST(empty_fields["oneOf"][0]["required"] == json::parse(R"(["intent"])"));

  for (const char* bad : {R"({})", R"([])", R"({"x": "string"})", R"({"x": {"intent": "string"}})",
                          R"({"x": {"a": "nubmer"}})"}) {
    BOOST_TEST_CONTEXT(bad) {
      BOOST_TEST(thrown_by([&] { one_of_intents(json::parse(bad)); }).code() == ErrorCode::usage);
    }
  }
  BOOST_TEST(thrown_by([&] { one_of_intents(json::parse(R"({"x": {"a": "nubmer"}})")); })
                 .message()
                 .find("intents.x.a: unknown type 'nubmer'") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(intent_discriminator_picks_the_branch) {
  json schema = one_of_intents(kIntents);
  BOOST_TEST(validated(json::parse(R"({"intent":"multiply","a":3,"b":4})"), schema) ==
             json::parse(R"({"intent":"multiply","a":3,"b":4})"));

  std::vector<std::string> repairs;
  json fixed = validated(json::parse(R"({"Intent":"Multiply","a":"3","b":4.5,"why":"x"})"), schema,
                         &repairs);
  BOOST_TEST(fixed == json::parse(R"({"intent":"multiply","a":3,"b":4.5})"));
  BOOST_TEST(repairs.size() == 4u);
  BOOST_TEST(repairs.at(0) == "field \"Intent\": renamed to \"intent\"");
  BOOST_TEST(repairs.at(1) == "field \"intent\": changed \"Multiply\" to \"multiply\"");
  BOOST_TEST(repairs.at(2) == "field \"a\": converted string \"3\" to number");
  BOOST_TEST(repairs.at(3) == "field \"why\": dropped unknown field");

  BOOST_TEST(invalid_message(json::parse(R"({"intent":"mutliply","a":3,"b":4})"), schema) ==
             "field \"intent\": \"mutliply\" is not one of add, divide, done_for_now, multiply, "
             "request_more_information");
  BOOST_TEST(invalid_message(json::parse(R"({"a":3,"b":4})"), schema) ==
             "field \"intent\": missing; expected one of add, divide, done_for_now, multiply, "
             "request_more_information");
  BOOST_TEST(invalid_message(json::parse(R"({"intent":"add","a":3,"b":"xyz"})"), schema) ==
             "field \"b\": expected number, got string \"xyz\"");
  BOOST_TEST(invalid_message(json::parse(R"({"intent":"add","a":3})"), schema) ==
             "field \"b\": missing (required)");
  BOOST_TEST(invalid_message(json::parse(R"("add")"), schema).find("reply: expected an object") ==
             0u);
}

BOOST_AUTO_TEST_CASE(coercions_are_recorded) {
  json schema = expand_schema(json::parse(R"({
    "n": "number", "i": "integer", "f": "integer", "ok": "boolean", "s": "string",
    "b": "string", "tags": ["string"], "obj": {"x": "number"}, "note": "string?",
    "message": "string"})"));
  std::vector<std::string> repairs;
  json value = validated(json::parse(R"({
    "n": "3.5", "i": " 42 ", "f": 4.0, "ok": "TRUE", "s": 7, "b": false, "tags": "solo",
    "obj": "{\"x\": 1}", "note": null, "Message": "hi", "unknown": 1})"),
                         schema, &repairs);
  BOOST_TEST(value == json::parse(R"({
    "n": 3.5, "i": 42, "f": 4, "ok": true, "s": "7", "b": "false", "tags": ["solo"],
    "obj": {"x": 1}, "note": null, "message": "hi"})"));
  BOOST_TEST(value["i"].is_number_integer());
  BOOST_TEST(value["f"].is_number_integer());
  std::string all;
  for (const auto& r : repairs) all += r + "\n";
  for (const char* expected : {
           "field \"n\": converted string \"3.5\" to number",
           "field \"i\": converted string \" 42 \" to integer",
           "field \"f\": converted 4.0 to integer 4",
           "field \"ok\": converted string \"TRUE\" to boolean",
           "field \"s\": converted number 7 to string",
           "field \"b\": converted boolean false to string",
           "field \"tags\": wrapped a single value in an array",
           "field \"obj\": parsed the object out of a JSON string",
           "field \"Message\": renamed to \"message\"",
           "field \"unknown\": dropped unknown field",
       })
    BOOST_TEST(all.find(expected) != std::string::npos, "missing \"" << expected << "\" in\n"
                                                                     << all);
}

BOOST_AUTO_TEST_CASE(null_in_an_optional_non_nullable_field_is_dropped) {
  json schema = json::parse(R"({"type":"object","properties":{"x":{"type":"string"},
                                                               "y":{"type":"string"}},
                                "required":["y"]})");
  std::vector<std::string> repairs;
  BOOST_TEST(validated(json::parse(R"({"x":null,"y":"a"})"), schema, &repairs) ==
             json::parse(R"({"y":"a"})"));
  BOOST_TEST(repairs.at(0) == "field \"x\": dropped null value of an optional field");
  BOOST_TEST(invalid_message(json::parse(R"({"y":null})"), schema) ==
             "field \"y\": expected string, got null");
}

BOOST_AUTO_TEST_CASE(failures_name_the_field_and_why) {
  json schema = expand_schema(json::parse(R"({
    "items": [{"name": "string", "qty": "integer"}], "color": {"enum": ["red", "green"]}})"));
  BOOST_TEST(invalid_message(json::parse(R"({"items":[{"name":"a","qty":1},{"name":"b","qty":1.5}],
                                             "color":"red"})"),
                             schema) == "field \"items[1].qty\": expected integer, got number 1.5");
  BOOST_TEST(invalid_message(json::parse(R"({"items":[],"color":"purple"})"), schema) ==
             "field \"color\": \"purple\" is not one of red, green");
  BOOST_TEST(invalid_message(json::parse(R"({"items":[]})"), schema) ==
             "field \"color\": missing (required)");
  BOOST_TEST(invalid_message(json::parse(R"([1])"), schema) ==
             "reply: expected object, got an array of 1 item");
  BOOST_TEST(invalid_message(json::parse(R"({"items":[], "color": null})"), schema) ==
             "field \"color\": null is not one of red, green");

  std::vector<std::string> repairs;
  BOOST_TEST(validated(json::parse(R"({"items":[],"color":"Green"})"), schema, &repairs)["color"] ==
             "green");
  BOOST_TEST(repairs.at(0) == "field \"color\": changed \"Green\" to \"green\"");

  json bounded =
      json::parse(R"({"type":"array","items":{"type":"number"},"minItems":1,"maxItems":2})");
  BOOST_TEST(invalid_message(json::array(), bounded) == "reply: expected at least 1 item, got 0");
  BOOST_TEST(invalid_message(json::parse("[1,2,3]"), bounded) ==
             "reply: expected at most 2 items, got 3");
  // A schema written as a Lua table holds signed integers: its bounds count the same.
  json signed_bounds = {
      {"type", "array"}, {"minItems", std::int64_t{1}}, {"maxItems", std::int64_t{2}}};
  BOOST_TEST(signed_bounds["minItems"].is_number_unsigned() == false);
  BOOST_TEST(invalid_message(json::array(), signed_bounds) ==
             "reply: expected at least 1 item, got 0");
  BOOST_TEST(invalid_message(json::parse("[1,2,3]"), signed_bounds) ==
             "reply: expected at most 2 items, got 3");
  BOOST_TEST(invalid_message(json::parse(R"({"k":"a"})"),
                             json::parse(R"({"properties":{"k":{"const":"b"}}})")) ==
             "field \"k\": expected \"b\", got string \"a\"");
}

BOOST_AUTO_TEST_CASE(nullable_any_of_and_refs) {
  json nullable = json::parse(R"({"type":["number","null"]})");
  BOOST_TEST(validated(nullptr, nullable).is_null());
  BOOST_TEST(validated("2", nullable) == 2);

  // Without a discriminator the branch needing the fewest repairs wins.
  json any_of = json::parse(R"({"anyOf":[{"type":"string"},{"type":"number"}]})");
  BOOST_TEST(validated(5, any_of) == 5);
  BOOST_TEST(validated("x", any_of) == "x");
  BOOST_TEST(invalid_message(json::array(), any_of)
                 .find("reply: matches none of the 2 allowed "
                       "shapes; first problem: reply: expected "
                       "string") == 0u);

  json with_refs = json::parse(R"({
    "$defs": {"point": {"type":"object","properties":{"x":{"type":"number"}},"required":["x"]}},
    "type": "array", "items": {"$ref": "#/$defs/point"}})");
  BOOST_TEST(validated(json::parse(R"([{"x":"1"}])"), with_refs) == json::parse(R"([{"x":1}])"));
  BOOST_TEST(invalid_message(json::parse(R"([{"y":1}])"), with_refs) ==
             "field \"[0].x\": missing (required)");

  json cycle = json::parse(R"({"allOf":[{"$ref":"#"}]})");
  BOOST_TEST(thrown_by([&] { validated(1, cycle); }).code() == ErrorCode::limit);
  json dangling = json::parse(R"({"$ref":"#/nowhere"})");
  BOOST_TEST(thrown_by([&] { validated(1, dangling); }).code() == ErrorCode::usage);
}

BOOST_AUTO_TEST_CASE(structured_output_end_to_end) {
  json schema = one_of_intents(kIntents);
  auto result = parse_structured_output(
      "<think>3 times 4 is 12, so multiply.</think>\nSure! Here is the JSON:\n```json\n"
      "{\"intent\": \"multiply\", \"a\": \"3\", \"b\": 4,}\n```",
      schema);
  BOOST_TEST(result.value == json::parse(R"({"intent":"multiply","a":3,"b":4})"));
  BOOST_TEST(result.complete);
  std::string all;
  for (const auto& r : result.repairs) all += r + "\n";
  for (const char* expected : {"removed <think> block", "removed markdown fence",
                               "removed trailing comma", "field \"a\": converted string \"3\""})
    BOOST_TEST(all.find(expected) != std::string::npos, expected << " not in\n" << all);

  auto two = parse_structured_output(R"({"intent":"add","a":1,"b":2} {"intent":"add","a":3,"b":4})",
                                     schema);
  BOOST_TEST(two.value["a"] == 1);
  BOOST_TEST(std::count(two.repairs.begin(), two.repairs.end(),
                        "reply held 2 JSON objects; used the first") == 1);

  auto unvalidated = parse_structured_output("{'free': 'form'}", nullptr);
  BOOST_TEST(unvalidated.value == json::parse(R"({"free":"form"})"));

  auto prose = parse_structured_output("  Paris is the capital.\n", json{{"type", "string"}});
  BOOST_TEST(prose.value == "Paris is the capital.");

  auto cut =
      parse_structured_output(R"({"intent":"done_for_now","message":"The answer is 1)", schema);
  BOOST_TEST(!cut.complete);
  BOOST_TEST(cut.value["message"] == "The answer is 1");

  Error bad = thrown_by([&] { parse_structured_output("I refuse to answer in JSON.", schema); });
  BOOST_TEST(bad.code() == ErrorCode::invalid_output);
  BOOST_TEST(bad.message().find('\n') == std::string::npos);
  Error wrong = thrown_by(
      [&] { parse_structured_output(R"({"intent":"multiply","a":3,"b":"four"})", schema); });
  BOOST_TEST(wrong.message() == "field \"b\": expected number, got string \"four\"");
}

BOOST_AUTO_TEST_CASE(compiled_schema_takes_fitting_replies_as_they_are) {
  CompiledSchema schema(one_of_intents(kIntents));
  BOOST_TEST(schema.fits_as_is(json::parse(R"({"intent":"multiply","a":3,"b":4.5})")));
  BOOST_TEST(schema.fits_as_is(json::parse(R"({"intent":"done_for_now","message":"12"})")));
  // Anything the full validation would repair or reject is left to it.
  for (const char* reply : {
           R"({"intent":"Multiply","a":3,"b":4})",        // case of the intent
           R"({"Intent":"multiply","a":3,"b":4})",        // name of the field
           R"({"intent":"multiply","a":"3","b":4})",      // number as a string
           R"({"intent":"multiply","a":3,"b":4,"c":5})",  // unknown field
           R"({"intent":"multiply","a":3})",              // missing field
           R"({"intent":"mutliply","a":3,"b":4})",        // unknown intent
           R"({"intent":7,"a":3,"b":4})",                 // intent not a string
           R"(["intent","multiply"])",                    // not an object
       }) {
    BOOST_TEST_CONTEXT(reply) {
      BOOST_TEST(!schema.fits_as_is(json::parse(reply)));
      check_both(json::parse(reply), schema.json());
    }
  }
  auto result = parse_structured_output(R"({"intent":"add","a":1,"b":2})", schema);
  BOOST_TEST(result.value == json::parse(R"({"intent":"add","a":1,"b":2})"));
  BOOST_TEST(result.repairs.empty());
  Error wrong = thrown_by(
      [&] { parse_structured_output(R"({"intent":"multiply","a":3,"b":"four"})", schema); });
  BOOST_TEST(wrong.message() == "field \"b\": expected number, got string \"four\"");
}

// The quick check must never say "fits" where the full validation repairs or throws,
// including for schemas that are malformed in parts the reply does not reach.
BOOST_AUTO_TEST_CASE(compiled_schema_agrees_with_the_full_validation) {
  struct Case {
    const char* schema;
    std::vector<const char*> values;
    std::optional<bool> first_fits;  // what fits_as_is says of the first value, when known
  };
  const std::vector<Case> cases{
      // A discriminator value spelled like an earlier branch's goes to that branch.
      {R"({"oneOf":[{"properties":{"k":{"const":"Add"},"x":{"type":"string"}}},
                    {"properties":{"k":{"const":"add"},"x":{"type":"number"}}}]})",
       {R"({"k":"add","x":1})", R"({"k":"Add","x":"s"})", R"({"k":" add ","x":"s"})"},
       false},
      {R"({"oneOf":[{"properties":{"k":{"const":"a"}}},{"properties":{"k":{"const":"a"},
                                                      "x":{"type":"string"}}}]})",
       {R"({"k":"a","x":1})", R"({"k":"a"})"},
       std::nullopt},
      // Without a discriminator only a fitting first branch is taken as it is.
      {R"({"anyOf":[{"type":"string"},{"type":"number"}]})", {"\"x\"", "5", "null", "[]"}, true},
      {R"({"anyOf":[{"type":"nubmer"},{"type":"string"}]})", {"\"x\"", "5"}, false},
      {R"({"oneOf":[{"type":"string"},5]})", {"\"x\"", "5"}, true},
      {R"({"oneOf":[]})", {"1"}, false},
      {R"({"oneOf":{"type":"string"}})", {"\"x\""}, false},
      // Malformed keywords the reply does reach, and ones it does not.
      {R"({"type":"object","properties":{"a":{"type":"wat"}}})",
       {R"({"b":1})", R"({"a":1})"},
       true},
      {R"({"type":"array","items":7})", {"[]", "[1]"}, true},
      {R"({"enum":"red"})", {"\"red\""}, false},
      {R"({"allOf":{"type":"string"}})", {"\"x\""}, false},
      {R"({"allOf":[{"type":"number"},{"type":"integer"}]})", {"3", "3.5", "\"3\""}, true},
      {R"({"type":5})", {"\"x\""}, true},
      {R"({"type":["string",7]})", {"\"x\"", "1"}, true},
      {"true", {"1", R"({"a":1})"}, true},
      {"false", {"1"}, false},
      {"7", {"1"}, false},
      {R"({"$ref":"#/$defs/x","$defs":{"x":{"type":"string"}}})", {"\"x\"", "1"}, false},
      // Objects: renames, undeclared keys, nulls, required names without a schema.
      {R"({"properties":{"user_name":{"type":"string"}}})",
       {R"({"userName":"a"})", R"({"user_name":"a","userName":"b"})", R"({"other":1})"},
       false},
      {R"({"properties":{"a":{"type":"string"}},"additionalProperties":{"type":"number"}})",
       {R"({"a":"x","b":2})", R"({"a":"x","b":"2"})", R"({"b":null})"},
       true},
      {R"({"properties":{"a":{"type":"string"}},"additionalProperties":true})",
       {R"({"b":[1]})"},
       true},
      {R"({"properties":{"a":{"type":"string"}},"required":["a","b","a"]})",
       {R"({"a":"x","b":1})", R"({"a":"x"})", R"({"b":1})"},
       true},
      {R"({"properties":{"a":{"type":"string"}},"required":"a"})", {"{}"}, true},
      {R"({"properties":{"a":{"type":"string"}}})", {R"({"a":null})", R"({"a":"x"})"}, false},
      {R"({"properties":[1]})", {"{}", "[]"}, true},
      {R"({"additionalProperties":false})", {"{}", R"({"a":1})"}, true},
      // Arrays: tuples, bounds (non-negative integers; others are no bound), wrapping.
      {R"({"items":[{"type":"string"},{"type":"number"}]})",
       {R"(["a",1,true])", R"(["a","b"])", R"([1])", "\"a\""},
       true},
      {R"({"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":2})",
       {"[1]", "[]", "[1,2,3]", "[1.5]", "[\"2\"]", "3"},
       true},
      {R"({"type":"array","minItems":-1,"maxItems":1.5})", {"[1,2,3]"}, true},
      // Scalars: const and enum compare as JSON values; coercions are the full path's.
      {R"({"const":1})", {"1", "1.0", "\"1\""}, true},
      {R"({"const":"a"})", {"\"a\"", "\"A\"", "\" a \""}, true},
      {R"({"enum":["a",1,null]})", {"null", "1", "\"A\"", "true"}, true},
      {R"({"type":"integer"})", {"2", "2.0", "-3", "18446744073709551615", "\"4\""}, true},
      {R"({"type":"boolean"})", {"true", "\"True\"", "1"}, true},
      {R"({"type":["string","null"]})", {"null", "\"x\"", "5"}, true},
  };
  for (const Case& c : cases) {
    json schema = json::parse(c.schema);
    CompiledSchema compiled(schema);
    for (const char* text : c.values) {
      BOOST_TEST_CONTEXT(c.schema << " with " << text) {
        check_both(json::parse(text), schema);
      }
    }
    if (c.first_fits) {
      BOOST_TEST_CONTEXT(c.schema) {
        BOOST_TEST(compiled.fits_as_is(json::parse(c.values.front())) == *c.first_fits);
      }
    }
  }
  // Deeper than the compiled form goes: the full validation decides.
  json deep = json{{"type", "string"}};
  json value = "x";
  for (int i = 0; i < 80; ++i) {
    deep = json{{"type", "object"}, {"properties", {{"x", deep}}}};
    value = json{{"x", value}};
  }
  BOOST_TEST(!CompiledSchema(deep).fits_as_is(value));
  check_both(value, deep);
}
