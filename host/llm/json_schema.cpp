#include "llm/json_schema.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string_view>

#include "llm/lenient_json.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {
namespace {

using nlohmann::json;

constexpr int kMaxSchemaDepth = 64;
// Each validation step counts, not only each value level, so a $ref cycle that never
// descends into the value still ends.
constexpr int kMaxValidationDepth = 256;

// Keywords that make a table a JSON Schema rather than a table of fields.
constexpr std::array<std::string_view, 10> kStructuralKeywords{
    "type", "enum", "const", "properties", "items", "oneOf", "anyOf", "allOf", "$ref", "not"};

// Every keyword a pass-through schema may hold; any other key makes the table a record.
constexpr std::array<std::string_view, 52> kKnownKeywords{"type",
                                                          "enum",
                                                          "const",
                                                          "properties",
                                                          "items",
                                                          "oneOf",
                                                          "anyOf",
                                                          "allOf",
                                                          "$ref",
                                                          "not",
                                                          "required",
                                                          "additionalProperties",
                                                          "description",
                                                          "title",
                                                          "default",
                                                          "examples",
                                                          "minItems",
                                                          "maxItems",
                                                          "minimum",
                                                          "maximum",
                                                          "exclusiveMinimum",
                                                          "exclusiveMaximum",
                                                          "minLength",
                                                          "maxLength",
                                                          "pattern",
                                                          "format",
                                                          "$defs",
                                                          "definitions",
                                                          "$schema",
                                                          "$id",
                                                          "$comment",
                                                          "nullable",
                                                          "prefixItems",
                                                          "uniqueItems",
                                                          "multipleOf",
                                                          "propertyNames",
                                                          "patternProperties",
                                                          "minProperties",
                                                          "maxProperties",
                                                          "deprecated",
                                                          "readOnly",
                                                          "writeOnly",
                                                          "contentMediaType",
                                                          "contentEncoding",
                                                          "if",
                                                          "then",
                                                          "else",
                                                          "dependentRequired",
                                                          "dependentSchemas",
                                                          "contains",
                                                          "minContains",
                                                          "maxContains"};

constexpr std::array<std::string_view, 7> kJsonTypes{"string", "number", "integer", "boolean",
                                                     "object", "array",  "null"};

template <std::size_t N>
bool among(const std::array<std::string_view, N>& set, std::string_view word) {
  return std::find(set.begin(), set.end(), word) != set.end();
}

bool looks_like_schema(const json& table) {
  bool structural = false;
  for (const auto& [key, value] : table.items()) {
    if (!among(kKnownKeywords, key) && key.rfind("x-", 0) != 0) return false;
    if (among(kStructuralKeywords, key)) structural = true;
  }
  return structural;
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

// Field names compared the way a model garbles them: case, '_', '-' and spaces ignored.
std::string loose_name(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '_' || c == '-' || c == ' ') continue;
    out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
  }
  return out;
}

std::string trim(std::string_view text) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!text.empty() && space(text.front())) text.remove_prefix(1);
  while (!text.empty() && space(text.back())) text.remove_suffix(1);
  return std::string(text);
}

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// A value as the model should read it in an error: `string "xyz"`, `number 3.5`, `array`.
std::string describe(const json& value) {
  switch (value.type()) {
    case json::value_t::string: {
      std::string text = value.get_ref<const std::string&>();
      if (text.size() > 40) {
        std::size_t cut = 40;
        while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
        text = text.substr(0, cut) + "...";
      }
      return "string " + dump(json(text));
    }
    case json::value_t::boolean:
      return std::string("boolean ") + (value.get<bool>() ? "true" : "false");
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array of " + std::to_string(value.size()) +
             (value.size() == 1 ? " item" : " items");
    default:
      return "number " + dump(value);
  }
}

// ---------------------------------------------------------------------------------------
// Expansion of the short form.

class Expander {
 public:
  json expand(const json& node, const std::string& path, int depth) {
    if (depth > kMaxSchemaDepth)
      throw Error(ErrorCode::limit, path + ": schema nests deeper than " +
                                        std::to_string(kMaxSchemaDepth) + " levels");
    if (node.is_string()) return expand_type_name(node.get_ref<const std::string&>(), path);
    if (node.is_array()) {
      if (node.empty()) return json{{"type", "array"}};
      if (node.size() > 1)
        throw Error(ErrorCode::usage,
                    path +
                        ": a list schema holds exactly one element type, e.g. {\"string\"}; "
                        "for a choice of values write {enum = {...}}");
      return json{{"type", "array"}, {"items", expand(node[0], path + "[]", depth + 1)}};
    }
    if (node.is_object()) {
      if (node.empty()) return json{{"type", "object"}};
      if (looks_like_schema(node)) return pass_through(node, path, depth);
      return record(node, path, depth);
    }
    if (node.is_boolean() && node.get<bool>()) return json::object();  // JSON Schema `true`
    throw Error(ErrorCode::usage, path +
                                      ": expected a type name such as \"string\" or "
                                      "\"number?\", or a table, got " +
                                      describe(node));
  }

 private:
  json expand_type_name(std::string_view name, const std::string& path) {
    std::string_view base = name;
    bool optional = false, list = false;
    if (!base.empty() && base.back() == '?') {
      optional = true;
      base.remove_suffix(1);
    }
    if (base.size() > 2 && base.substr(base.size() - 2) == "[]") {
      list = true;
      base.remove_suffix(2);
    }
    std::string type(base);
    if (type == "int") type = "integer";
    if (type == "float") type = "number";
    if (type == "bool") type = "boolean";
    json schema;
    if (type == "any") {
      schema = json::object();
    } else if (among(kJsonTypes, type) && type != "null") {
      schema = json{{"type", type}};
    } else {
      throw Error(ErrorCode::usage,
                  path + ": unknown type '" + std::string(name) +
                      "' (use string, number, integer, boolean, object, array or any; "
                      "a trailing ? makes it optional, [] makes it a list)");
    }
    if (list) schema = json{{"type", "array"}, {"items", std::move(schema)}};
    if (optional && schema.contains("type")) schema["type"] = json::array({schema["type"], "null"});
    return schema;
  }

  json record(const json& node, const std::string& path, int depth) {
    json properties = json::object();
    json required = json::array();
    for (const auto& [raw_key, value] : node.items()) {
      std::string key = raw_key;
      bool optional = false;
      if (key.size() > 1 && key.back() == '?') {
        key.pop_back();
        optional = true;
      }
      if (key.empty() || key == "?") throw Error(ErrorCode::usage, path + ": empty field name");
      if (properties.contains(key))
        throw Error(ErrorCode::usage, path + "." + key + ": declared twice");
      if (value.is_string()) {
        const auto& name = value.get_ref<const std::string&>();
        if (!name.empty() && name.back() == '?') optional = true;
      }
      json field = expand(value, path + "." + key, depth + 1);
      if (optional && field.contains("type") && field["type"].is_string())
        field["type"] = json::array({field["type"], "null"});
      properties[key] = std::move(field);
      if (!optional) required.push_back(key);
    }
    return json{{"type", "object"},
                {"properties", std::move(properties)},
                {"required", std::move(required)},
                {"additionalProperties", false}};
  }

  void check_type_keyword(const json& type, const std::string& path) {
    auto check_one = [&](const json& t) {
      if (!t.is_string() || !among(kJsonTypes, t.get_ref<const std::string&>()))
        throw Error(ErrorCode::usage, path + ".type: unknown type " + dump(t) +
                                          " (JSON Schema types: string, number, integer, "
                                          "boolean, object, array, null)");
    };
    if (type.is_array()) {
      if (type.empty()) throw Error(ErrorCode::usage, path + ".type: empty list of types");
      for (const auto& t : type) check_one(t);
    } else {
      check_one(type);
    }
  }

  json pass_through(const json& node, const std::string& path, int depth) {
    json schema = node;
    if (node.contains("type")) check_type_keyword(node["type"], path);
    if (node.contains("properties")) {
      const json& props = node["properties"];
      if (!props.is_object())
        throw Error(ErrorCode::usage, path + ".properties: expected a table of fields");
      for (const auto& [key, value] : props.items())
        schema["properties"][key] = expand(value, path + "." + key, depth + 1);
    }
    if (node.contains("items")) {
      const json& items = node["items"];
      if (items.is_array()) {
        for (std::size_t i = 0; i < items.size(); ++i)
          schema["items"][i] = expand(items[i], path + "[" + std::to_string(i) + "]", depth + 1);
      } else {
        schema["items"] = expand(items, path + "[]", depth + 1);
      }
    }
    for (const char* keyword : {"oneOf", "anyOf", "allOf", "prefixItems"}) {
      if (!node.contains(keyword)) continue;
      const json& list = node[keyword];
      if (!list.is_array() || list.empty())
        throw Error(ErrorCode::usage,
                    path + "." + keyword + ": expected a non-empty list of schemas");
      for (std::size_t i = 0; i < list.size(); ++i)
        schema[keyword][i] =
            expand(list[i], path + "." + keyword + "[" + std::to_string(i) + "]", depth + 1);
    }
    for (const char* keyword : {"not", "additionalProperties"}) {
      if (node.contains(keyword) && !node[keyword].is_boolean())
        schema[keyword] = expand(node[keyword], path + "." + keyword, depth + 1);
    }
    for (const char* keyword : {"$defs", "definitions"}) {
      if (!node.contains(keyword)) continue;
      if (!node[keyword].is_object())
        throw Error(ErrorCode::usage, path + "." + keyword + ": expected a table of schemas");
      for (const auto& [key, value] : node[keyword].items())
        schema[keyword][key] = expand(value, path + "." + keyword + "." + key, depth + 1);
    }
    if (node.contains("enum") && (!node["enum"].is_array() || node["enum"].empty()))
      throw Error(ErrorCode::usage, path + ".enum: expected a non-empty list of values");
    if (node.contains("required") && !node["required"].is_array())
      throw Error(ErrorCode::usage, path + ".required: expected a list of field names");
    return schema;
  }
};

// ---------------------------------------------------------------------------------------
// Validation with coercion.

std::string join_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::optional<double> parse_number(std::string_view text) {
  std::string trimmed = trim(text);
  std::string_view digits = trimmed;
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  if (digits.empty()) return std::nullopt;
  double value = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || !std::isfinite(value))
    return std::nullopt;
  return value;
}

// Integral doubles that fit an int64 exactly.
std::optional<std::int64_t> as_integer(double d) {
  if (!std::isfinite(d) || std::floor(d) != d || d < -9.2e18 || d > 9.2e18) return std::nullopt;
  return static_cast<std::int64_t>(d);
}

// minItems / maxItems: a non-negative integer, signed or not (a schema written as a Lua
// table holds signed integers); anything else is no bound.
std::optional<std::size_t> count_bound(const json& schema, const char* keyword) {
  auto found = schema.find(keyword);
  if (found == schema.end() || !found->is_number_integer()) return std::nullopt;
  if (found->is_number_unsigned()) return found->get<std::size_t>();
  std::int64_t count = found->get<std::int64_t>();
  if (count < 0) return std::nullopt;
  return static_cast<std::size_t>(count);
}

bool has_type(const json& value, std::string_view type) {
  if (type == "string") return value.is_string();
  if (type == "number") return value.is_number();
  if (type == "integer") return value.is_number_integer();
  if (type == "boolean") return value.is_boolean();
  if (type == "null") return value.is_null();
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  return false;
}

std::string list_words(const std::vector<std::string>& words, std::string_view last_joiner) {
  std::string out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += (i + 1 == words.size()) ? std::string(last_joiner) : std::string(", ");
    out += words[i];
  }
  return out;
}

// An enum value as a model should see it in a list: strings bare, others as JSON.
std::string show_choice(const json& value) {
  return value.is_string() ? value.get<std::string>() : dump(value);
}

// A property every branch pins with a string const ("intent", "type", ...), if any.
std::optional<std::string> discriminator_of(const std::vector<const json*>& branches) {
  if (branches.empty() || !(*branches[0]).contains("properties")) return std::nullopt;
  std::vector<std::string> candidates;
  for (const auto& [name, property] : (*branches[0])["properties"].items())
    if (property.is_object() && property.contains("const") && property["const"].is_string())
      candidates.push_back(name);
  std::stable_partition(candidates.begin(), candidates.end(),
                        [](const std::string& n) { return n == "intent"; });
  for (const auto& name : candidates) {
    bool everywhere = std::all_of(branches.begin(), branches.end(), [&](const json* b) {
      return b->is_object() && b->contains("properties") && (*b)["properties"].is_object() &&
             (*b)["properties"].contains(name) && (*b)["properties"][name].is_object() &&
             (*b)["properties"][name].contains("const") &&
             (*b)["properties"][name]["const"].is_string();
    });
    if (everywhere) return name;
  }
  return std::nullopt;
}

class Validator {
 public:
  // `subject` names the value as a whole in messages: "reply" (a model's), "arguments".
  Validator(const json& root, std::vector<std::string>& repairs, std::string_view subject)
      : root_(root), repairs_(repairs), subject_(subject) {}

  // Resolves every $ref of the schema once, so one that leads nowhere is refused where the
  // schema is made, not by the first value checked against it. Values under const, enum,
  // default and examples are data, not schema.
  void check_refs() {
    std::vector<std::pair<const json*, std::string>> pending{{&root_, ""}};
    while (!pending.empty()) {
      auto [schema, path] = pending.back();
      pending.pop_back();
      if (schema->is_array()) {
        for (std::size_t i = 0; i < schema->size(); ++i)
          pending.push_back({&(*schema)[i], path + "[" + std::to_string(i) + "]"});
        continue;
      }
      if (!schema->is_object()) continue;
      if (auto ref = schema->find("$ref"); ref != schema->end()) resolve(*ref, path);
      for (const auto& [key, value] : schema->items())
        if (key != "const" && key != "enum" && key != "default" && key != "examples")
          pending.push_back({&value, join_path(path, key)});
    }
  }

  void validate(json& value, const json& schema, const std::string& path, int depth) {
    if (depth > kMaxValidationDepth)
      throw Error(ErrorCode::limit, where(path) + ": schema or value nests deeper than " +
                                        std::to_string(kMaxValidationDepth) +
                                        " levels (a recursive $ref?)");
    if (schema.is_boolean()) {
      if (!schema.get<bool>()) invalid(path, "no value is allowed here");
      return;
    }
    if (!schema.is_object())
      throw Error(ErrorCode::usage, "schema for " + where(path) + " is not an object");
    if (schema.contains("$ref")) {
      validate(value, resolve(schema["$ref"], path), path, depth + 1);
      return;
    }
    if (schema.contains("allOf"))
      for (const json& part : schema["allOf"]) validate(value, part, path, depth + 1);
    for (const char* keyword : {"oneOf", "anyOf"})
      if (schema.contains(keyword)) choose_branch(value, schema[keyword], path, depth);
    check_type(value, schema, path);
    if (schema.contains("const")) check_const(value, schema["const"], path);
    if (schema.contains("enum")) check_enum(value, schema["enum"], path);
    if (value.is_object()) check_object(value, schema, path, depth);
    if (value.is_array()) check_array(value, schema, path, depth);
  }

 private:
  std::string where(const std::string& path) const {
    return path.empty() ? std::string(subject_) : "field \"" + path + "\"";
  }

  [[noreturn]] void invalid(const std::string& path, const std::string& why) const {
    throw Error(ErrorCode::invalid_output, where(path) + ": " + why);
  }

  const json& resolve(const json& ref, const std::string& path) {
    const json* target = nullptr;
    const json* current = &ref;
    for (int hops = 0; hops < 32; ++hops) {
      if (!current->is_string() || current->get_ref<const std::string&>().rfind('#', 0) != 0)
        throw Error(ErrorCode::usage, "schema for " + where(path) +
                                          ": only local $ref "
                                          "(\"#/...\") is supported");
      try {
        json::json_pointer pointer(current->get_ref<const std::string&>().substr(1));
        if (!root_.contains(pointer)) break;
        target = &root_.at(pointer);
      } catch (const nlohmann::json::exception&) {
        break;
      }
      if (!target->is_object() || !target->contains("$ref")) return *target;
      current = &(*target)["$ref"];
    }
    throw Error(ErrorCode::usage,
                "schema for " + where(path) + ": $ref " + dump(ref) + " does not resolve");
  }

  std::vector<std::string> allowed_types(const json& schema, const std::string& path) {
    std::vector<std::string> types;
    if (schema.contains("type")) {
      const json& type = schema["type"];
      if (type.is_string()) types.push_back(type.get<std::string>());
      if (type.is_array())
        for (const json& t : type)
          if (t.is_string()) types.push_back(t.get<std::string>());
      for (const auto& t : types)
        if (!among(kJsonTypes, t))
          throw Error(ErrorCode::usage, "schema for " + where(path) + ": unknown type '" + t + "'");
    } else if (schema.contains("properties")) {
      types.push_back("object");  // lets a stringified object be unpacked
    } else if (schema.contains("items")) {
      types.push_back("array");
    }
    return types;
  }

  void check_type(json& value, const json& schema, const std::string& path) {
    std::vector<std::string> types = allowed_types(schema, path);
    if (types.empty()) return;
    for (const auto& type : types)
      if (has_type(value, type)) return;
    for (const auto& type : types)
      if (coerce(value, type, path)) return;
    invalid(path, "expected " + list_words(types, " or ") + ", got " + describe(value));
  }

  void note(const std::string& path, const std::string& what) {
    repairs_.push_back(where(path) + ": " + what);
  }

  // Tries to turn `value` into `type`; true (with a repair note) when it worked.
  bool coerce(json& value, const std::string& type, const std::string& path) {
    if (type == "integer" && value.is_number_float()) {
      if (auto i = as_integer(value.get<double>())) {
        note(path, "converted " + dump(value) + " to integer " + std::to_string(*i));
        value = *i;
        return true;
      }
      return false;
    }
    if ((type == "number" || type == "integer") && value.is_string()) {
      auto number = parse_number(value.get_ref<const std::string&>());
      if (!number) return false;
      json converted;
      if (auto i = as_integer(*number))
        converted = *i;
      else if (type == "number")
        converted = *number;
      else
        return false;
      note(path, "converted " + describe(value) + " to " + type);
      value = std::move(converted);
      return true;
    }
    if (type == "boolean" && value.is_string()) {
      std::string word = lower(trim(value.get_ref<const std::string&>()));
      if (word != "true" && word != "false") return false;
      note(path, "converted " + describe(value) + " to boolean");
      value = word == "true";
      return true;
    }
    if (type == "string" && (value.is_number() || value.is_boolean())) {
      note(path, "converted " + describe(value) + " to string");
      value = dump(value);
      return true;
    }
    if ((type == "object" || type == "array") && value.is_string()) {
      // Models sometimes send a nested value as a JSON string: "{\"a\": 1}".
      std::string text = trim(value.get_ref<const std::string&>());
      if (!text.empty() && text.front() == (type == "object" ? '{' : '[')) {
        try {
          LenientResult inner = parse_lenient_json(text);
          if (has_type(inner.value, type)) {
            note(path, "parsed the " + type + " out of a JSON string");
            value = std::move(inner.value);
            return true;
          }
        } catch (const Error&) {
        }
      }
    }
    if (type == "array" && !value.is_array() && !value.is_null()) {
      note(path, "wrapped a single " + std::string(value.is_object() ? "object" : "value") +
                     " in an array");
      value = json::array({std::move(value)});
      return true;
    }
    return false;
  }

  void check_const(json& value, const json& expected, const std::string& path) {
    if (value == expected) return;
    if (value.is_string() && expected.is_string() &&
        lower(trim(value.get_ref<const std::string&>())) ==
            lower(expected.get_ref<const std::string&>())) {
      note(path, "changed " + dump(value) + " to " + dump(expected));
      value = expected;
      return;
    }
    invalid(path, "expected " + dump(expected) + ", got " + describe(value));
  }

  void check_enum(json& value, const json& choices, const std::string& path) {
    if (!choices.is_array()) throw Error(ErrorCode::usage, "schema enum is not a list");
    for (const json& choice : choices)
      if (value == choice) return;
    std::optional<std::string> spelled;
    if (value.is_string()) spelled = lower(trim(value.get_ref<const std::string&>()));
    if (value.is_number() || value.is_boolean()) spelled = dump(value);
    if (spelled) {
      for (const json& choice : choices) {
        if (choice.is_string() && lower(choice.get_ref<const std::string&>()) == *spelled) {
          note(path, "changed " + dump(value) + " to " + dump(choice));
          value = choice;
          return;
        }
      }
    }
    std::vector<std::string> names;
    for (const json& choice : choices) names.push_back(show_choice(choice));
    std::string shown = value.is_string() ? dump(value) : describe(value);
    invalid(path, shown + " is not one of " + list_words(names, ", "));
  }

  void check_object(json& value, const json& schema, const std::string& path, int depth) {
    static const json kEmpty = json::object();
    const json& properties = schema.contains("properties") && schema["properties"].is_object()
                                 ? schema["properties"]
                                 : kEmpty;
    std::vector<std::string> required;
    if (schema.contains("required") && schema["required"].is_array())
      for (const json& name : schema["required"])
        if (name.is_string()) required.push_back(name.get<std::string>());
    auto is_required = [&](const std::string& key) {
      return std::find(required.begin(), required.end(), key) != required.end();
    };

    std::vector<std::string> keys;
    for (const auto& [key, unused] : value.items()) keys.push_back(key);
    for (const std::string& original : keys) {
      std::string key = original;
      if (!properties.contains(key)) {
        std::optional<std::string> renamed;
        for (const auto& [name, unused] : properties.items())
          if (!value.contains(name) && loose_name(name) == loose_name(key)) renamed = name;
        if (renamed) {
          note(join_path(path, key), "renamed to \"" + *renamed + "\"");
          value[*renamed] = std::move(value[key]);
          value.erase(key);
          key = *renamed;
        }
      }
      std::string child_path = join_path(path, key);
      if (properties.contains(key)) {
        try {
          validate(value[key], properties[key], child_path, depth + 1);
        } catch (const Error& error) {
          // An optional field the model filled with null is the same as leaving it out.
          if (error.code() != ErrorCode::invalid_output || !value[key].is_null() ||
              is_required(key))
            throw;
          note(child_path, "dropped null value of an optional field");
          value.erase(key);
        }
        continue;
      }
      const json additional =
          schema.contains("additionalProperties") ? schema["additionalProperties"] : json(true);
      if (additional.is_boolean() && !additional.get<bool>()) {
        note(child_path, "dropped unknown field");
        value.erase(key);
      } else if (additional.is_object()) {
        validate(value[key], additional, child_path, depth + 1);
      }
    }
    for (const std::string& name : required)
      if (!value.contains(name)) invalid(join_path(path, name), "missing (required)");
  }

  void check_array(json& value, const json& schema, const std::string& path, int depth) {
    if (schema.contains("items")) {
      const json& items = schema["items"];
      for (std::size_t i = 0; i < value.size(); ++i) {
        std::string item_path = path + "[" + std::to_string(i) + "]";
        if (items.is_array()) {
          if (i < items.size()) validate(value[i], items[i], item_path, depth + 1);
        } else {
          validate(value[i], items, item_path, depth + 1);
        }
      }
    }
    auto bound = [&](const char* keyword) { return count_bound(schema, keyword); };
    auto items_word = [](std::size_t n) {
      return std::to_string(n) + (n == 1 ? " item" : " items");
    };
    if (auto min = bound("minItems"); min && value.size() < *min)
      invalid(path,
              "expected at least " + items_word(*min) + ", got " + std::to_string(value.size()));
    if (auto max = bound("maxItems"); max && value.size() > *max)
      invalid(path,
              "expected at most " + items_word(*max) + ", got " + std::to_string(value.size()));
  }

  void choose_branch(json& value, const json& list, const std::string& path, int depth) {
    if (!list.is_array() || list.empty())
      throw Error(ErrorCode::usage, "schema for " + where(path) + ": oneOf/anyOf is not a list");
    std::vector<const json*> branches;
    for (const json& branch : list)
      branches.push_back(
          branch.is_object() && branch.contains("$ref") ? &resolve(branch["$ref"], path) : &branch);
    if (auto field = discriminator_of(branches)) {
      choose_by_discriminator(value, branches, *field, path, depth);
      return;
    }
    // No discriminator: the branch that fits with the fewest repairs wins, as in BAML.
    std::optional<json> best_value;
    std::vector<std::string> best_repairs;
    std::string first_problem;
    for (const json* branch : branches) {
      json candidate = value;
      std::vector<std::string> notes;
      Validator inner(root_, notes, subject_);
      try {
        inner.validate(candidate, *branch, path, depth + 1);
      } catch (const Error& error) {
        if (error.code() != ErrorCode::invalid_output) throw;
        if (first_problem.empty()) first_problem = error.message();
        continue;
      }
      if (!best_value || notes.size() < best_repairs.size()) {
        best_value = std::move(candidate);
        best_repairs = std::move(notes);
        if (best_repairs.empty()) break;
      }
    }
    if (!best_value)
      invalid(path, "matches none of the " + std::to_string(branches.size()) +
                        " allowed shapes; first problem: " + first_problem);
    value = std::move(*best_value);
    repairs_.insert(repairs_.end(), best_repairs.begin(), best_repairs.end());
  }

  void choose_by_discriminator(json& value, const std::vector<const json*>& branches,
                               const std::string& field, const std::string& path, int depth) {
    std::vector<std::string> names;
    for (const json* b : branches)
      names.push_back((*b)["properties"][field]["const"].get<std::string>());
    std::string choices = list_words(names, ", ");
    if (!value.is_object()) coerce(value, "object", path);
    if (!value.is_object())
      invalid(path, "expected an object with \"" + field + "\" set to one of " + choices +
                        ", got " + describe(value));
    std::string field_path = join_path(path, field);
    if (!value.contains(field)) {
      for (const auto& [key, unused] : value.items()) {
        if (loose_name(key) == loose_name(field)) {
          note(join_path(path, key), "renamed to \"" + field + "\"");
          json moved = std::move(value[key]);
          value.erase(key);
          value[field] = std::move(moved);
          break;
        }
      }
    }
    if (!value.contains(field)) invalid(field_path, "missing; expected one of " + choices);
    const json& chosen = value[field];
    if (!chosen.is_string())
      invalid(field_path, "expected one of " + choices + ", got " + describe(chosen));
    std::string wanted = lower(trim(chosen.get_ref<const std::string&>()));
    for (std::size_t i = 0; i < branches.size(); ++i) {
      if (names[i] == chosen.get_ref<const std::string&>() || lower(names[i]) == wanted) {
        if (names[i] != chosen.get_ref<const std::string&>()) {
          note(field_path, "changed " + dump(chosen) + " to " + dump(json(names[i])));
          value[field] = names[i];
        }
        validate(value, *branches[i], path, depth + 1);
        return;
      }
    }
    invalid(field_path, dump(chosen) + " is not one of " + choices);
  }

  const json& root_;
  std::vector<std::string>& repairs_;
  std::string_view subject_;
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Compiled schemas: the quick check for replies that already fit.
//
// It mirrors Validator rule for rule, but only answers "fits as it is" or "don't know":
// wherever the full validation would repair, drop, rename, throw or look something up
// ($ref), the node or the check says no and the caller runs the full validation, so the
// repairs and errors a reply gets never depend on this code.

struct CompiledSchema::Node {
  struct Property {
    std::string name;
    std::string loose;  // loose_name(name): an undeclared key spelled like it gets renamed
    const Node* schema = nullptr;
    bool required = false;
  };
  struct Choice {  // a oneOf or anyOf
    std::vector<const Node*> branches;
    std::string discriminator;  // empty: none, and only the first branch is tried
    // Discriminator value -> branch, for the values the full path takes as written.
    std::map<std::string, const Node*, std::less<>> by_name;
  };
  enum class Extra { allowed, dropped, checked };  // what becomes of undeclared keys

  bool supported = true;   // false: the quick check cannot vouch for any value here
  std::uint8_t types = 0;  // bits of the allowed types; 0: no type check
  // nlohmann:: spelled out: inside CompiledSchema, `json` names the member function.
  const nlohmann::json* constant = nullptr;
  const nlohmann::json* enum_values = nullptr;  // an array
  std::vector<const Node*> all_of;
  std::vector<Choice> one_or_any_of;
  std::vector<Property> properties;             // in key order, as JSON objects iterate
  std::size_t required_properties = 0;          // how many of `properties` are required
  std::vector<std::string> required_elsewhere;  // required names with no property schema
  Extra extra = Extra::allowed;
  const Node* extra_schema = nullptr;
  bool has_items = false;
  const Node* items = nullptr;     // one schema for every item
  std::vector<const Node*> tuple;  // or one per position (items given as a list)
  std::optional<std::size_t> min_items, max_items;
};

namespace {

using Node = CompiledSchema::Node;

// Deeper nodes are left unsupported; the full validation's own limit (256) stays far off.
constexpr int kMaxCompiledDepth = 64;

enum TypeBit : std::uint8_t {
  kString = 1,
  kNumber = 2,
  kInteger = 4,
  kBoolean = 8,
  kObject = 16,
  kArray = 32,
  kNull = 64,
};

std::uint8_t type_bit(std::string_view name) {
  if (name == "string") return kString;
  if (name == "number") return kNumber;
  if (name == "integer") return kInteger;
  if (name == "boolean") return kBoolean;
  if (name == "object") return kObject;
  if (name == "array") return kArray;
  if (name == "null") return kNull;
  return 0;
}

// has_type for a set of types at once.
bool has_any_type(const json& value, std::uint8_t types) {
  switch (value.type()) {
    case json::value_t::string:
      return types & kString;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return types & (kNumber | kInteger);
    case json::value_t::number_float:
      return types & kNumber;
    case json::value_t::boolean:
      return types & kBoolean;
    case json::value_t::object:
      return types & kObject;
    case json::value_t::array:
      return types & kArray;
    case json::value_t::null:
      return types & kNull;
    default:
      return false;
  }
}

class Compiler {
 public:
  explicit Compiler(std::vector<std::unique_ptr<Node>>& nodes) : nodes_(nodes) {}

  const Node* compile(const json& schema, int depth) {
    Node& node = *nodes_.emplace_back(std::make_unique<Node>());
    if (depth > kMaxCompiledDepth) {
      node.supported = false;
    } else if (schema.is_boolean()) {
      node.supported = schema.get<bool>();  // `false` rejects every value: an error to build
    } else if (!schema.is_object() || schema.contains("$ref")) {
      node.supported = false;
    } else {
      node.supported = fill(node, schema, depth);
    }
    return &node;
  }

 private:
  // Validator::validate's checks, in its order; false where the quick check gives up.
  bool fill(Node& node, const json& schema, int depth) {
    if (schema.contains("allOf")) {
      if (!schema["allOf"].is_array()) return false;
      for (const json& part : schema["allOf"]) node.all_of.push_back(compile(part, depth + 1));
    }
    for (const char* keyword : {"oneOf", "anyOf"}) {
      if (!schema.contains(keyword)) continue;
      if (!choice(node, schema[keyword], depth)) return false;
    }
    if (!types(node, schema)) return false;
    if (schema.contains("const")) node.constant = &schema["const"];
    if (schema.contains("enum")) {
      if (!schema["enum"].is_array()) return false;
      node.enum_values = &schema["enum"];
    }
    object_rules(node, schema, depth);
    array_rules(node, schema, depth);
    return true;
  }

  bool choice(Node& node, const json& list, int depth) {
    if (!list.is_array() || list.empty()) return false;
    std::vector<const json*> branches;
    for (const json& branch : list) {
      if (branch.is_object() && branch.contains("$ref")) return false;
      branches.push_back(&branch);
    }
    Node::Choice& choice = node.one_or_any_of.emplace_back();
    for (const json* branch : branches) choice.branches.push_back(compile(*branch, depth + 1));
    auto field = discriminator_of(branches);
    if (!field) return true;
    choice.discriminator = *field;
    // choose_by_discriminator takes the first branch whose name equals the reply's value
    // or matches it ignoring case and spaces; only a value whose branch wins as written,
    // with no earlier near-match, is indexed.
    std::vector<std::string> names;
    for (std::size_t i = 0; i < branches.size(); ++i) {
      const std::string& name =
          (*branches[i])["properties"][*field]["const"].get_ref<const std::string&>();
      std::string wanted = lower(trim(name));
      bool earlier_match = false;
      for (const std::string& earlier : names)
        if (earlier == name || lower(earlier) == wanted) earlier_match = true;
      if (!earlier_match) choice.by_name.emplace(name, choice.branches[i]);
      names.push_back(name);
    }
    return true;
  }

  // Validator::allowed_types as bits; false for an unknown type name (a usage error).
  bool types(Node& node, const json& schema) {
    if (schema.contains("type")) {
      const json& type = schema["type"];
      auto add = [&](const json& name) {
        if (!name.is_string()) return true;
        std::uint8_t bit = type_bit(name.get_ref<const std::string&>());
        node.types |= bit;
        return bit != 0;
      };
      if (type.is_string()) return add(type);
      if (type.is_array())
        for (const json& name : type)
          if (!add(name)) return false;
    } else if (schema.contains("properties")) {
      node.types = kObject;
    } else if (schema.contains("items")) {
      node.types = kArray;
    }
    return true;
  }

  void object_rules(Node& node, const json& schema, int depth) {
    std::vector<std::string> required;
    if (schema.contains("required") && schema["required"].is_array())
      for (const json& name : schema["required"]) {
        if (!name.is_string()) continue;
        const std::string& text = name.get_ref<const std::string&>();
        if (std::find(required.begin(), required.end(), text) == required.end())
          required.push_back(text);
      }
    if (schema.contains("properties") && schema["properties"].is_object()) {
      for (const auto& [name, property] : schema["properties"].items()) {
        bool is_required = std::find(required.begin(), required.end(), name) != required.end();
        node.properties.push_back(
            {name, loose_name(name), compile(property, depth + 1), is_required});
        if (is_required) ++node.required_properties;
      }
    }
    for (const std::string& name : required) {
      bool declared = std::any_of(node.properties.begin(), node.properties.end(),
                                  [&](const Node::Property& p) { return p.name == name; });
      if (!declared) node.required_elsewhere.push_back(name);
    }
    if (schema.contains("additionalProperties")) {
      const json& additional = schema["additionalProperties"];
      if (additional.is_boolean() && !additional.get<bool>()) {
        node.extra = Node::Extra::dropped;
      } else if (additional.is_object()) {
        node.extra = Node::Extra::checked;
        node.extra_schema = compile(additional, depth + 1);
      }
    }
  }

  void array_rules(Node& node, const json& schema, int depth) {
    if (schema.contains("items")) {
      node.has_items = true;
      const json& items = schema["items"];
      if (items.is_array()) {
        for (const json& item : items) node.tuple.push_back(compile(item, depth + 1));
      } else {
        node.items = compile(items, depth + 1);
      }
    }
    node.min_items = count_bound(schema, "minItems");
    node.max_items = count_bound(schema, "maxItems");
  }

  std::vector<std::unique_ptr<Node>>& nodes_;
};

bool fits(const Node& node, const json& value);

bool fits_choice(const Node::Choice& choice, const json& value) {
  // Without a discriminator the full path tries the branches in order and keeps the first
  // that needs no repair; a later branch could only win after an earlier one failed, and
  // that failure might be a schema error the full path would raise.
  if (choice.discriminator.empty()) return fits(*choice.branches.front(), value);
  if (!value.is_object()) return false;
  auto field = value.find(choice.discriminator);
  if (field == value.end() || !field->is_string()) return false;
  auto branch = choice.by_name.find(field->get_ref<const std::string&>());
  return branch != choice.by_name.end() && fits(*branch->second, value);
}

bool fits_object(const Node& node, const json& value) {
  std::size_t required_seen = 0;
  auto property = node.properties.begin();
  for (auto item = value.begin(); item != value.end(); ++item) {
    const std::string& key = item.key();
    // Both run in key order, so one pass pairs each key with its declaration.
    while (property != node.properties.end() && property->name < key) ++property;
    if (property != node.properties.end() && property->name == key) {
      if (!fits(*property->schema, item.value())) return false;
      if (property->required) ++required_seen;
      continue;
    }
    if (!node.properties.empty()) {
      std::string loose = loose_name(key);
      for (const Node::Property& declared : node.properties)
        if (declared.loose == loose && !value.contains(declared.name)) return false;  // renamed
    }
    if (node.extra == Node::Extra::dropped) return false;
    if (node.extra == Node::Extra::checked && !fits(*node.extra_schema, item.value())) return false;
  }
  if (required_seen != node.required_properties) return false;
  for (const std::string& name : node.required_elsewhere)
    if (!value.contains(name)) return false;
  return true;
}

bool fits_array(const Node& node, const json& value) {
  if (node.has_items) {
    if (node.items) {
      for (const json& item : value)
        if (!fits(*node.items, item)) return false;
    } else {
      for (std::size_t i = 0; i < value.size() && i < node.tuple.size(); ++i)
        if (!fits(*node.tuple[i], value[i])) return false;
    }
  }
  if (node.min_items && value.size() < *node.min_items) return false;
  if (node.max_items && value.size() > *node.max_items) return false;
  return true;
}

bool fits(const Node& node, const json& value) {
  if (!node.supported) return false;
  for (const Node* part : node.all_of)
    if (!fits(*part, value)) return false;
  for (const Node::Choice& choice : node.one_or_any_of)
    if (!fits_choice(choice, value)) return false;
  if (node.types != 0 && !has_any_type(value, node.types)) return false;
  if (node.constant && value != *node.constant) return false;
  if (node.enum_values && std::none_of(node.enum_values->begin(), node.enum_values->end(),
                                       [&](const json& choice) { return value == choice; }))
    return false;
  if (value.is_object() && !fits_object(node, value)) return false;
  if (value.is_array() && !fits_array(node, value)) return false;
  return true;
}

}  // namespace

CompiledSchema::CompiledSchema(nlohmann::json schema, std::string_view subject)
    : schema_(std::move(schema)) {
  root_ = Compiler(nodes_).compile(schema_, 0);
  std::vector<std::string> unused;
  Validator(schema_, unused, subject).check_refs();
  try {
    text_ = schema_.dump();
  } catch (const nlohmann::json::exception&) {
    // Left to whoever sends it: their dump() fails the request as before.
  }
}

CompiledSchema::~CompiledSchema() = default;

bool CompiledSchema::fits_as_is(const nlohmann::json& value) const {
  return fits(*root_, value);
}

json expand_schema(const json& short_form) {
  return Expander().expand(short_form, "schema", 0);
}

json one_of_intents(const json& intents) {
  if (!intents.is_object() || intents.empty())
    throw Error(ErrorCode::usage,
                "intents: expected a table mapping each intent name to its fields, e.g. "
                "{add = {a = \"number\", b = \"number\"}}");
  json branches = json::array();
  for (const auto& [name, fields] : intents.items()) {
    std::string path = "intents." + name;
    if (name.empty()) throw Error(ErrorCode::usage, "intents: an intent name is empty");
    json properties = json::object();
    json required = json::array();
    if (!(fields.is_object() || fields.is_array()) || (fields.is_array() && !fields.empty()))
      throw Error(ErrorCode::usage, path + ": expected a table of fields, got " + describe(fields));
    if (!fields.empty()) {
      json expanded = Expander().expand(fields, path, 1);
      if (!expanded.contains("properties"))
        throw Error(ErrorCode::usage, path + ": expected a table of fields");
      properties = expanded["properties"];
      if (expanded.contains("required")) required = expanded["required"];
    }
    if (properties.contains("intent"))
      throw Error(ErrorCode::usage,
                  path + ".intent: 'intent' is set by llm.one_of; choose another field name");
    properties["intent"] = json{{"type", "string"}, {"const", name}};
    required.insert(required.begin(), "intent");
    branches.push_back(json{{"type", "object"},
                            {"properties", std::move(properties)},
                            {"required", std::move(required)},
                            {"additionalProperties", false}});
  }
  return json{{"oneOf", std::move(branches)}};
}

void coerce_and_validate(json& value, const json& schema, std::vector<std::string>& repairs,
                         std::string_view subject) {
  Validator(schema, repairs, subject).validate(value, schema, "", 0);
}

void coerce_and_validate(json& value, const CompiledSchema& schema,
                         std::vector<std::string>& repairs, std::string_view subject) {
  if (schema.fits_as_is(value)) return;
  coerce_and_validate(value, schema.json(), repairs, subject);
}

}  // namespace luagent::llm
