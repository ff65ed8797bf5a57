// JSON / JSON Schema constrained decoding.
//
// Three parts:
//   1. SchemaCompiler turns the schema into a Grammar: a vector of nodes (object, array, string,
//      number, literal set, any-of, any value) that refer to each other by index, so that $ref
//      recursion is a cycle in the graph, not an unbounded expansion.
//   2. The automaton runs over bytes. Its state is a small set of stacks of frames (one frame per
//      open value); anyOf alternatives that start alike run side by side until the bytes tell them
//      apart. A stack is persistent: its top frame is held by value and the rest is a chain of
//      links in an arena, so that stepping one byte copies one small frame, not the whole stack.
//   3. apply() walks the vocabulary trie (token byte strings in preorder, shared by every choice)
//      depth first, stepping the automaton once per trie node and skipping the subtree of every
//      node whose byte kills all stacks.
#include "engine/json_constraint.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "tokenizer/tokenizer.h"

namespace sq {

namespace {

using json = nlohmann::ordered_json;  // a schema's properties keep their order

// Bounds that make every generation terminate and keep the output compact.
// Open values at once. Above kMaxSchemaDepth, so that only recursion and free-form JSON reach it.
constexpr uint32_t kMaxDepth = 160;
constexpr uint32_t kMaxStacks = 16;         // anyOf alternatives followed side by side
constexpr uint32_t kMaxIntDigits = 15;      // digits before the point
constexpr uint32_t kMaxFracDigits = 15;     // digits after the point
constexpr uint32_t kMaxBoundedDigits = 18;  // both together when bounds are checked (exact uint64)
constexpr size_t kMaxProperties = 256;      // declared properties of one object (key tries are P^2)
constexpr uint32_t kUnbounded = std::numeric_limits<uint32_t>::max();
constexpr int kMaxSchemaDepth = 128;     // nested subschemas, $ref hops included
constexpr size_t kMaxAlternatives = 64;  // frames one value start may expand into (anyOf)
constexpr size_t kMaxKeyTableBytes = size_t{4} << 20;  // property-name tries, all objects

enum class Kind : uint8_t { Root, Any, Object, Array, String, Number, Literal, AnyOf, Alias };

// A trie of byte strings (enum values, object keys). `terminal` is the value id ending here, -1
// when none.
struct LitNode {
  std::vector<std::pair<uint8_t, int32_t>> edges;
  int32_t terminal = -1;
};

struct Prop {
  std::string name;
  int32_t node = -1;
  bool required = false;
};

struct Node {
  Kind kind = Kind::Any;
  // Object. Emitted properties are the declared ones in schema order; `extra` is what the schema
  // says of other keys (-2: none allowed, -1: anything, >= 0: values of that node), used when the
  // object is free-form (no declared or required properties) and to check enum values.
  std::vector<Prop> props;
  std::vector<int32_t> key_trie;       // [P + 1]: keys allowed next when props [0, i) are behind
  std::vector<uint8_t> required_from;  // [P + 1]: some prop j >= i is required
  int32_t extra = -1;
  bool free_keys = false;
  // Array.
  std::vector<int32_t> prefix;
  int32_t items = -1;  // -1: no items beyond the prefix
  uint32_t min_items = 0, max_items = kUnbounded;
  // String (lengths in code points, as JSON Schema counts them).
  uint32_t min_len = 0, max_len = kUnbounded;
  // Number.
  bool integer = false, bounded = false;
  double lo = -std::numeric_limits<double>::infinity(),
         hi = std::numeric_limits<double>::infinity();
  bool lo_excl = false, hi_excl = false;
  // Literal: the values and the trie of their compact serialisations.
  std::vector<json> values;
  int32_t trie = -1;
  // AnyOf / Alias.
  std::vector<int32_t> alts;
  int32_t target = -1;
};

struct Grammar {
  std::vector<Node> nodes;
  std::vector<LitNode> lits;
  int32_t root = -1;
  // The pieces of "any JSON value", shared by json_object and by schemas `{}` / `true`.
  int32_t any = -1, any_object = -1, any_array = -1, any_string = -1, any_number = -1,
          any_literal = -1;

  int32_t add_lit_node() {
    lits.emplace_back();
    return static_cast<int32_t>(lits.size() - 1);
  }
  int32_t lit_child(int32_t at, uint8_t c) const {
    for (const auto& [b, child] : lits[static_cast<size_t>(at)].edges) {
      if (b == c) return child;
    }
    return -1;
  }
  void lit_insert(int32_t root_node, std::string_view bytes, int32_t value) {
    int32_t at = root_node;
    for (unsigned char c : bytes) {
      int32_t next = lit_child(at, c);
      if (next < 0) {
        next = add_lit_node();
        lits[static_cast<size_t>(at)].edges.emplace_back(c, next);
      }
      at = next;
    }
    lits[static_cast<size_t>(at)].terminal = value;
  }
};

// ---------------------------------------------------------------------------------------------
// Schema compiler

const std::set<std::string, std::less<>>& annotation_keywords() {
  static const std::set<std::string, std::less<>> k = {
      "title",    "description", "default",  "examples",  "$schema", "$id",
      "$comment", "deprecated",  "readOnly", "writeOnly", "$defs",   "definitions"};
  return k;
}

const std::set<std::string, std::less<>>& object_keywords() {
  static const std::set<std::string, std::less<>> k = {"properties", "required",
                                                       "additionalProperties"};
  return k;
}
const std::set<std::string, std::less<>>& array_keywords() {
  static const std::set<std::string, std::less<>> k = {"items", "prefixItems", "minItems",
                                                       "maxItems"};
  return k;
}
const std::set<std::string, std::less<>>& string_keywords() {
  static const std::set<std::string, std::less<>> k = {"minLength", "maxLength"};
  return k;
}
const std::set<std::string, std::less<>>& number_keywords() {
  static const std::set<std::string, std::less<>> k = {"minimum", "maximum", "exclusiveMinimum",
                                                       "exclusiveMaximum"};
  return k;
}

std::string brief(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Code points of a valid UTF-8 string (nlohmann validated it when parsing).
size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Type bits for oneOf exclusivity.
constexpr uint32_t kTObject = 1, kTArray = 2, kTString = 4, kTInteger = 8, kTFraction = 16,
                   kTBool = 32, kTNull = 64, kTAll = 127;

class SchemaCompiler {
 public:
  SchemaCompiler(const json& root, Grammar& g) : root_(root), g_(g) {}

  void compile_root() {
    make_any_nodes();
    if (root_.is_null()) {
      g_.root = g_.any_object;
      return;
    }
    g_.root = compile(root_, "schema");
    resolve_aliases();
    check_anyof_cycles();
    finish_literals();
    finish_objects();
    check_one_ofs();
    check_satisfiable();
  }

 private:
  struct PendingLiteral {
    int32_t node;
    int32_t filter;  // -1: none
    std::string path;
  };
  struct PendingOneOf {
    int32_t node;
    std::string path;
  };

  int32_t new_node(Kind kind) {
    g_.nodes.emplace_back();
    g_.nodes.back().kind = kind;
    return static_cast<int32_t>(g_.nodes.size() - 1);
  }
  Node& node(int32_t i) { return g_.nodes[static_cast<size_t>(i)]; }

  void make_any_nodes() {
    g_.any = new_node(Kind::Any);
    g_.any_object = new_node(Kind::Object);
    node(g_.any_object).free_keys = true;
    node(g_.any_object).extra = g_.any;
    g_.any_array = new_node(Kind::Array);
    node(g_.any_array).items = g_.any;
    g_.any_string = new_node(Kind::String);
    g_.any_number = new_node(Kind::Number);
    g_.any_literal = new_node(Kind::Literal);
    node(g_.any_literal).values = {json(true), json(false), json(nullptr)};
    pending_literals_.push_back({g_.any_literal, -1, "schema"});
    finish_objects_from_ = static_cast<int32_t>(g_.nodes.size());
    // The any nodes are done now; json_object needs nothing else.
    finish_literals();
    finish_object(g_.any_object);
  }

  int32_t compile(const json& s, const std::string& path) {
    // The compiler recurses along the schema (and through $ref); a hostile schema nested thousands
    // deep must not overflow the stack.
    if (depth_ >= kMaxSchemaDepth) {
      fail<InvalidArgument>("{}: the schema is nested more than {} levels deep", path,
                            kMaxSchemaDepth);
    }
    ++depth_;
    struct Leave {
      int& d;
      ~Leave() { --d; }
    } leave{depth_};
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail<InvalidArgument>("{}: the schema false accepts no value", path);
      return g_.any;
    }
    if (!s.is_object()) {
      fail<InvalidArgument>("{}: a schema must be an object or a boolean, got {}", path, brief(s));
    }
    // Which keywords are present, beyond annotations.
    std::vector<std::string> keys;
    for (const auto& [key, value] : s.items()) {
      if (annotation_keywords().count(key)) continue;
      if (key == "pattern" || key == "format") {
        fail<InvalidArgument>(
            "{}.{}: '{}' is not supported by squeeze's structured output (only "
            "the length of strings can be constrained)",
            path, key, key);
      }
      if (key != "type" && key != "enum" && key != "const" && key != "anyOf" && key != "oneOf" &&
          key != "allOf" && key != "$ref" && !object_keywords().count(key) &&
          !array_keywords().count(key) && !string_keywords().count(key) &&
          !number_keywords().count(key)) {
        fail<InvalidArgument>(
            "{}.{}: the keyword '{}' is not supported by squeeze's structured "
            "output (supported: type, properties, required, "
            "additionalProperties, items, prefixItems, minItems, maxItems, "
            "minLength, maxLength, minimum, maximum, exclusiveMinimum, "
            "exclusiveMaximum, enum, const, anyOf, oneOf, allOf of one schema, "
            "$ref)",
            path, key, key);
      }
      keys.push_back(key);
    }
    auto only = [&](std::string_view kw) {
      for (const std::string& k : keys) {
        if (k != kw) {
          fail<InvalidArgument>(
              "{}.{}: '{}' beside '{}' is not supported (put the constraints in "
              "the schemas that '{}' names)",
              path, k, k, kw, kw);
        }
      }
    };
    if (s.contains("$ref")) {
      only("$ref");
      int32_t idx = new_node(Kind::Alias);
      node(idx).target = resolve_ref(s["$ref"], path + ".$ref");
      return idx;
    }
    if (s.contains("allOf")) {
      only("allOf");
      const json& a = s["allOf"];
      if (!a.is_array() || a.size() != 1) {
        fail<InvalidArgument>("{}.allOf: only an allOf of exactly one schema is supported, got {}",
                              path, brief(a));
      }
      int32_t idx = new_node(Kind::Alias);
      node(idx).target = compile(a[0], path + ".allOf.0");
      return idx;
    }
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (!s.contains(kw)) continue;
      only(kw);
      const json& a = s[kw];
      if (!a.is_array() || a.empty()) {
        fail<InvalidArgument>("{}.{}: expected a non-empty array of schemas, got {}", path, kw,
                              brief(a));
      }
      int32_t idx = new_node(Kind::AnyOf);
      std::vector<int32_t> alts;
      for (size_t i = 0; i < a.size(); ++i) {
        alts.push_back(compile(a[i], fmt::format("{}.{}.{}", path, kw, i)));
      }
      node(idx).alts = std::move(alts);
      if (std::string_view(kw) == "oneOf") pending_one_ofs_.push_back({idx, path + ".oneOf"});
      return idx;
    }
    if (s.contains("enum") || s.contains("const")) {
      if (s.contains("enum") && s.contains("const")) {
        fail<InvalidArgument>("{}: 'enum' and 'const' together are not supported", path);
      }
      std::vector<json> values;
      if (s.contains("const")) {
        values.push_back(s["const"]);
      } else {
        const json& e = s["enum"];
        if (!e.is_array() || e.empty()) {
          fail<InvalidArgument>("{}.enum: expected a non-empty array, got {}", path, brief(e));
        }
        for (const json& v : e) {
          if (std::find(values.begin(), values.end(), v) == values.end()) values.push_back(v);
        }
      }
      // The other keywords (type, lengths, bounds) filter the values.
      int32_t filter = -1;
      if (keys.size() > 1) {
        json rest = s;
        rest.erase("enum");
        rest.erase("const");
        filter = compile(rest, path);
      }
      int32_t idx = new_node(Kind::Literal);
      node(idx).values = std::move(values);
      pending_literals_.push_back({idx, filter, path});
      return idx;
    }
    // Types: given, or inferred from the keywords present (a schema without "type" accepts every
    // type; generating only the types its keywords describe stays valid).
    std::vector<std::string> types;
    if (s.contains("type")) {
      const json& t = s["type"];
      std::vector<json> list;
      if (t.is_array()) {
        if (t.empty()) fail<InvalidArgument>("{}.type: expected a type or a non-empty array", path);
        list.assign(t.begin(), t.end());
      } else {
        list.push_back(t);
      }
      for (const json& name : list) {
        static const std::set<std::string, std::less<>> kTypes = {
            "object", "array", "string", "number", "integer", "boolean", "null"};
        if (!name.is_string() || !kTypes.count(name.get<std::string>())) {
          fail<InvalidArgument>(
              "{}.type: {} is not a JSON Schema type (expected one of object, "
              "array, string, number, integer, boolean, null)",
              path, name.is_string() ? "'" + name.get<std::string>() + "'" : brief(name));
        }
        if (std::find(types.begin(), types.end(), name.get<std::string>()) == types.end()) {
          types.push_back(name.get<std::string>());
        }
      }
    } else {
      for (const std::string& k : keys) {
        const char* t = object_keywords().count(k)   ? "object"
                        : array_keywords().count(k)  ? "array"
                        : string_keywords().count(k) ? "string"
                        : number_keywords().count(k) ? "number"
                                                     : nullptr;
        if (t != nullptr && std::find(types.begin(), types.end(), t) == types.end()) {
          types.emplace_back(t);
        }
      }
      if (types.empty()) return g_.any;
    }
    if (types.size() == 1) return compile_typed(types[0], s, path);
    int32_t idx = new_node(Kind::AnyOf);
    std::vector<int32_t> alts;
    for (const std::string& t : types) alts.push_back(compile_typed(t, s, path));
    node(idx).alts = std::move(alts);
    return idx;
  }

  static uint32_t count_keyword(const json& s, const char* kw, const std::string& path) {
    const json& v = s[kw];
    if (!v.is_number_integer() ||
        (v.is_number_integer() && v.get<int64_t>() < 0 && !v.is_number_unsigned())) {
      fail<InvalidArgument>("{}.{}: expected a non-negative integer, got {}", path, kw, brief(v));
    }
    uint64_t n =
        v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
    return n >= kUnbounded ? kUnbounded - 1 : static_cast<uint32_t>(n);
  }

  static double number_keyword(const json& s, const char* kw, const std::string& path) {
    const json& v = s[kw];
    if (!v.is_number()) {
      fail<InvalidArgument>("{}.{}: expected a number, got {}", path, kw, brief(v));
    }
    return v.get<double>();
  }

  int32_t compile_typed(const std::string& type, const json& s, const std::string& path) {
    if (type == "object") return compile_object(s, path);
    if (type == "array") return compile_array(s, path);
    if (type == "string") {
      int32_t idx = new_node(Kind::String);
      if (s.contains("minLength")) node(idx).min_len = count_keyword(s, "minLength", path);
      if (s.contains("maxLength")) node(idx).max_len = count_keyword(s, "maxLength", path);
      if (node(idx).min_len > node(idx).max_len) {
        fail<InvalidArgument>("{}: minLength {} is above maxLength {}", path, node(idx).min_len,
                              node(idx).max_len);
      }
      return idx;
    }
    if (type == "number" || type == "integer") {
      int32_t idx = new_node(Kind::Number);
      Node& n = node(idx);
      n.integer = type == "integer";
      auto tighten_lo = [&](double v, bool excl) {
        if (v > n.lo || (v == n.lo && excl)) n.lo = v, n.lo_excl = excl;
      };
      auto tighten_hi = [&](double v, bool excl) {
        if (v < n.hi || (v == n.hi && excl)) n.hi = v, n.hi_excl = excl;
      };
      if (s.contains("minimum")) tighten_lo(number_keyword(s, "minimum", path), false);
      if (s.contains("exclusiveMinimum"))
        tighten_lo(number_keyword(s, "exclusiveMinimum", path), true);
      if (s.contains("maximum")) tighten_hi(number_keyword(s, "maximum", path), false);
      if (s.contains("exclusiveMaximum"))
        tighten_hi(number_keyword(s, "exclusiveMaximum", path), true);
      n.bounded = std::isfinite(n.lo) || std::isfinite(n.hi);
      if (n.bounded) {
        // Values must be writable with the bounded digit counts.
        const double limit = 1e15;
        double lo = std::max(n.lo, -limit), hi = std::min(n.hi, limit);
        bool empty = lo > hi || (lo == hi && (n.lo_excl || n.hi_excl));
        if (n.integer && !empty) {
          double ilo = n.lo_excl ? std::floor(lo) + 1 : std::ceil(lo);
          double ihi = n.hi_excl ? std::ceil(hi) - 1 : std::floor(hi);
          empty = ilo > ihi;
        }
        if (empty) {
          fail<InvalidArgument>(
              "{}: no {} lies within the bounds (minimum {}, maximum {}, and "
              "squeeze writes at most {} digits before the point)",
              path, n.integer ? "integer" : "number", n.lo, n.hi, kMaxIntDigits);
        }
      }
      return idx;
    }
    int32_t idx = new_node(Kind::Literal);
    if (type == "boolean") {
      node(idx).values = {json(true), json(false)};
    } else {
      node(idx).values = {json(nullptr)};
    }
    pending_literals_.push_back({idx, -1, path});
    return idx;
  }

  int32_t compile_object(const json& s, const std::string& path) {
    int32_t idx = new_node(Kind::Object);
    std::vector<Prop> props;
    if (s.contains("properties")) {
      const json& p = s["properties"];
      if (!p.is_object()) {
        fail<InvalidArgument>("{}.properties: expected an object, got {}", path, brief(p));
      }
      for (const auto& [name, sub] : p.items()) {
        props.push_back({name, -1, false});
      }
      for (Prop& prop : props) {
        prop.node = compile(p[prop.name], path + ".properties." + prop.name);
      }
    }
    int32_t extra = -1;
    if (s.contains("additionalProperties")) {
      const json& a = s["additionalProperties"];
      if (a.is_boolean()) {
        extra = a.get<bool>() ? -1 : -2;
      } else {
        extra = compile(a, path + ".additionalProperties");
      }
    }
    if (s.contains("required")) {
      const json& r = s["required"];
      if (!r.is_array()) {
        fail<InvalidArgument>("{}.required: expected an array of property names, got {}", path,
                              brief(r));
      }
      for (size_t i = 0; i < r.size(); ++i) {
        if (!r[i].is_string()) {
          fail<InvalidArgument>("{}.required.{}: expected a property name, got {}", path, i,
                                brief(r[i]));
        }
        const std::string name = r[i].get<std::string>();
        auto it =
            std::find_if(props.begin(), props.end(), [&](const Prop& p) { return p.name == name; });
        if (it != props.end()) {
          it->required = true;
          continue;
        }
        if (extra == -2) {
          fail<InvalidArgument>(
              "{}.required.{}: '{}' is required but is not in properties and "
              "additionalProperties is false",
              path, i, name);
        }
        props.push_back({name, extra >= 0 ? extra : g_.any, true});
      }
    }
    // Properties come out in the schema's order (the declared ones as "properties" lists them,
    // then those only "required" names, in its order): the order of fields matters to a model (a
    // "reasoning" field before the "answer"), and clients expect the one they wrote. Any order
    // validates.
    if (props.size() > kMaxProperties) {
      fail<InvalidArgument>("{}.properties: {} properties; squeeze supports at most {} per object",
                            path, props.size(), kMaxProperties);
    }
    Node& n = node(idx);
    n.props = std::move(props);
    n.extra = extra;
    n.free_keys = n.props.empty() && extra != -2;
    return idx;
  }

  int32_t compile_array(const json& s, const std::string& path) {
    int32_t idx = new_node(Kind::Array);
    std::vector<int32_t> prefix;
    if (s.contains("prefixItems")) {
      const json& p = s["prefixItems"];
      if (!p.is_array()) {
        fail<InvalidArgument>("{}.prefixItems: expected an array of schemas, got {}", path,
                              brief(p));
      }
      for (size_t i = 0; i < p.size(); ++i) {
        prefix.push_back(compile(p[i], fmt::format("{}.prefixItems.{}", path, i)));
      }
    }
    int32_t items = g_.any;
    if (s.contains("items")) {
      const json& it = s["items"];
      if (it.is_array()) {
        fail<InvalidArgument>(
            "{}.items: an array of schemas (the old tuple form) is not supported; "
            "use prefixItems",
            path);
      }
      if (it.is_boolean() && !it.get<bool>()) {
        items = -1;
      } else {
        items = compile(it, path + ".items");
      }
    }
    Node& n = node(idx);
    n.prefix = std::move(prefix);
    n.items = items;
    if (s.contains("minItems")) n.min_items = count_keyword(s, "minItems", path);
    if (s.contains("maxItems")) n.max_items = count_keyword(s, "maxItems", path);
    if (n.items < 0)
      n.max_items = std::min<uint32_t>(n.max_items, static_cast<uint32_t>(n.prefix.size()));
    if (n.min_items > n.max_items) {
      fail<InvalidArgument>("{}: minItems {} is above the most items allowed ({})", path,
                            n.min_items, n.max_items);
    }
    return idx;
  }

  int32_t resolve_ref(const json& ref, const std::string& path) {
    if (!ref.is_string()) fail<InvalidArgument>("{}: expected a string, got {}", path, brief(ref));
    const std::string r = ref.get<std::string>();
    if (auto it = refs_.find(r); it != refs_.end()) return it->second;
    if (r.empty() || r[0] != '#') {
      fail<InvalidArgument>(
          "{}: '{}' is not supported; only references inside the schema "
          "('#', '#/$defs/NAME', '#/definitions/NAME') are",
          path, r);
    }
    const json* target = nullptr;
    try {
      target = &root_.at(json::json_pointer(r.substr(1)));
    } catch (const json::exception&) {
      target = nullptr;
    }
    if (target == nullptr) fail<InvalidArgument>("{}: '{}' does not exist in the schema", path, r);
    // Reserved before compiling, so that a reference back to it closes the cycle.
    int32_t idx = new_node(Kind::Alias);
    refs_[r] = idx;
    const std::string target_path = r == "#" ? "schema" : "schema" + [&] {
      std::string p;
      for (char c : r.substr(1)) p += c == '/' ? '.' : c;
      return p;
    }();
    int32_t compiled = compile(*target, target_path);
    node(idx).target = compiled;
    return idx;
  }

  int32_t resolve(int32_t i, const std::string& path) {
    int32_t at = i;
    for (size_t hops = 0; node(at).kind == Kind::Alias; ++hops) {
      if (hops > g_.nodes.size()) {
        fail<InvalidArgument>("{}: a $ref cycle that never reaches a schema", path);
      }
      at = node(at).target;
    }
    return at;
  }

  // Every index that the automaton follows points at a real node, never at an alias.
  void resolve_aliases() {
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      Node& n = g_.nodes[i];
      for (Prop& p : n.props) p.node = resolve(p.node, "schema");
      if (n.extra >= 0) n.extra = resolve(n.extra, "schema");
      for (int32_t& p : n.prefix) p = resolve(p, "schema");
      if (n.items >= 0) n.items = resolve(n.items, "schema");
      for (int32_t& a : n.alts) a = resolve(a, "schema");
    }
    g_.root = resolve(g_.root, "schema");
    for (PendingLiteral& p : pending_literals_) {
      if (p.filter >= 0) p.filter = resolve(p.filter, p.path);
    }
  }

  // anyOf alternatives are expanded when a value starts; an alternative that leads back to the same
  // anyOf without reading a byte would expand forever.
  void check_anyof_cycles() {
    std::vector<uint8_t> state(g_.nodes.size(), 0);
    std::function<void(int32_t)> visit = [&](int32_t i) {
      if (node(i).kind != Kind::AnyOf) return;
      if (state[static_cast<size_t>(i)] == 2) return;
      if (state[static_cast<size_t>(i)] == 1) {
        fail<InvalidArgument>(
            "schema: an anyOf/oneOf that contains itself through $ref without an "
            "object or array in between cannot be generated");
      }
      state[static_cast<size_t>(i)] = 1;
      for (int32_t a : node(i).alts) visit(a);
      state[static_cast<size_t>(i)] = 2;
    };
    for (size_t i = 0; i < g_.nodes.size(); ++i) visit(static_cast<int32_t>(i));
    // Every byte that starts a value steps each alternative: nested anyOfs multiply, and the
    // product is work per vocabulary trie node.
    std::vector<size_t> size(g_.nodes.size(), 0);
    std::function<size_t(int32_t)> expansion = [&](int32_t i) -> size_t {
      size_t& sz = size[static_cast<size_t>(i)];
      if (sz != 0) return sz;
      if (node(i).kind != Kind::AnyOf) return sz = 1;
      size_t total = 0;
      for (int32_t a : node(i).alts) total = std::min(total + expansion(a), kMaxAlternatives + 1);
      return sz = total;
    };
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      if (expansion(static_cast<int32_t>(i)) > kMaxAlternatives) {
        fail<InvalidArgument>(
            "schema: an anyOf/oneOf (nested ones and type arrays counted together) "
            "with more than {} alternatives is not supported",
            kMaxAlternatives);
      }
    }
  }

 public:
  // Whether `v` validates against node `i`, as a JSON Schema validator would see it (extra object
  // keys are checked against `extra`).
  bool matches(const json& v, int32_t i, int depth = 0) const {
    if (depth > 64) return false;
    const Node& n = g_.nodes[static_cast<size_t>(i)];
    switch (n.kind) {
      case Kind::Any:
      case Kind::Root:
        return true;
      case Kind::Alias:
        return matches(v, n.target, depth + 1);
      case Kind::AnyOf:
        return std::any_of(n.alts.begin(), n.alts.end(),
                           [&](int32_t a) { return matches(v, a, depth + 1); });
      case Kind::Literal:
        return std::find(n.values.begin(), n.values.end(), v) != n.values.end();
      case Kind::String:
        if (!v.is_string()) return false;
        {
          size_t len = utf8_length(v.get_ref<const std::string&>());
          return len >= n.min_len && len <= n.max_len;
        }
      case Kind::Number: {
        if (!v.is_number()) return false;
        double x = v.get<double>();
        if (n.integer && !(v.is_number_integer() || x == std::floor(x))) return false;
        if (x < n.lo || (n.lo_excl && x == n.lo)) return false;
        if (x > n.hi || (n.hi_excl && x == n.hi)) return false;
        return true;
      }
      case Kind::Array: {
        if (!v.is_array() || v.size() < n.min_items || v.size() > n.max_items) return false;
        for (size_t k = 0; k < v.size(); ++k) {
          int32_t item = k < n.prefix.size() ? n.prefix[k] : n.items;
          if (item < 0 || !matches(v[k], item, depth + 1)) return false;
        }
        return true;
      }
      case Kind::Object: {
        if (!v.is_object()) return false;
        for (const Prop& p : n.props) {
          if (p.required && !v.contains(p.name)) return false;
        }
        for (const auto& [key, value] : v.items()) {
          auto it = std::find_if(n.props.begin(), n.props.end(),
                                 [&](const Prop& p) { return p.name == key; });
          if (it != n.props.end()) {
            if (!matches(value, it->node, depth + 1)) return false;
          } else if (n.extra == -2 || (n.extra >= 0 && !matches(value, n.extra, depth + 1))) {
            return false;
          }
        }
        return true;
      }
    }
    return false;
  }

 private:
  void finish_literals() {
    for (const PendingLiteral& p : pending_literals_) {
      Node& n = node(p.node);
      if (p.filter >= 0) {
        std::vector<json> kept;
        for (const json& v : n.values) {
          if (matches(v, p.filter)) kept.push_back(v);
        }
        if (kept.empty()) {
          fail<InvalidArgument>("{}: no value of enum/const satisfies the other keywords beside it",
                                p.path);
        }
        n.values = std::move(kept);
      }
      n.trie = g_.add_lit_node();
      for (size_t k = 0; k < n.values.size(); ++k) {
        // Compact serialisation: the value comes out exactly so, and it equals the enum value.
        g_.lit_insert(n.trie, n.values[k].dump(), static_cast<int32_t>(k));
      }
    }
    pending_literals_.clear();
  }

  void finish_object(int32_t i) {
    Node& n = node(i);
    const size_t count = n.props.size();
    n.required_from.assign(count + 1, 0);
    for (size_t k = count; k-- > 0;) {
      n.required_from[k] = n.required_from[k + 1] || n.props[k].required;
    }
    n.key_trie.assign(count + 1, -1);
    if (n.free_keys) return;
    for (size_t start = 0; start < count; ++start) {
      int32_t root = g_.add_lit_node();
      // Optional properties may be skipped, required ones may not: the keys allowed next are those
      // from `start` up to and including the first required one.
      for (size_t k = start; k < count; ++k) {
        const std::string key = json(n.props[k].name).dump();
        // A window of optional properties is inserted once per start: quadratic in a run of
        // optional ones, so bounded in bytes, not only in count.
        key_bytes_ += key.size();
        if (key_bytes_ > kMaxKeyTableBytes) {
          fail<InvalidArgument>("schema: the tables of allowed property names would exceed {} MiB "
                                "(many long optional property names in one object); make some of "
                                "them required or shorten them",
                                kMaxKeyTableBytes >> 20);
        }
        g_.lit_insert(root, key, static_cast<int32_t>(k));
        if (n.props[k].required) break;
      }
      node(i).key_trie[start] = root;
    }
  }

  void finish_objects() {
    for (size_t i = static_cast<size_t>(finish_objects_from_); i < g_.nodes.size(); ++i) {
      if (g_.nodes[i].kind == Kind::Object) finish_object(static_cast<int32_t>(i));
    }
  }

  uint32_t type_bits(int32_t i, int depth = 0) const {
    if (depth > 64) return kTAll;
    const Node& n = g_.nodes[static_cast<size_t>(i)];
    switch (n.kind) {
      case Kind::Object:
        return kTObject;
      case Kind::Array:
        return kTArray;
      case Kind::String:
        return kTString;
      case Kind::Number:
        return n.integer ? kTInteger : kTInteger | kTFraction;
      case Kind::Literal: {
        uint32_t bits = 0;
        for (const json& v : n.values) {
          if (v.is_object())
            bits |= kTObject;
          else if (v.is_array())
            bits |= kTArray;
          else if (v.is_string())
            bits |= kTString;
          else if (v.is_boolean())
            bits |= kTBool;
          else if (v.is_null())
            bits |= kTNull;
          else if (v.is_number_integer() || v.get<double>() == std::floor(v.get<double>()))
            bits |= kTInteger;
          else
            bits |= kTFraction;
        }
        return bits;
      }
      case Kind::AnyOf: {
        uint32_t bits = 0;
        for (int32_t a : n.alts) bits |= type_bits(a, depth + 1);
        return bits;
      }
      case Kind::Alias:
        return type_bits(n.target, depth + 1);
      default:
        return kTAll;
    }
  }

  // No value validates against both: a value generated from one alternative of a oneOf then matches
  // exactly one. Conservative: false when unsure.
  bool exclusive(int32_t a, int32_t b, int depth = 0) const {
    if (depth > 16) return false;
    if ((type_bits(a) & type_bits(b)) == 0) return true;
    const Node& na = g_.nodes[static_cast<size_t>(a)];
    const Node& nb = g_.nodes[static_cast<size_t>(b)];
    if (na.kind == Kind::AnyOf) {
      return std::all_of(na.alts.begin(), na.alts.end(),
                         [&](int32_t x) { return exclusive(x, b, depth + 1); });
    }
    if (nb.kind == Kind::AnyOf) return exclusive(b, a, depth + 1);
    if (na.kind == Kind::Literal) {
      return std::none_of(na.values.begin(), na.values.end(),
                          [&](const json& v) { return matches(v, b); });
    }
    if (nb.kind == Kind::Literal) return exclusive(b, a, depth + 1);
    if (na.kind == Kind::Object && nb.kind == Kind::Object) {
      // A discriminator: a property both require, whose values cannot agree.
      for (const Prop& pa : na.props) {
        if (!pa.required) continue;
        for (const Prop& pb : nb.props) {
          if (pb.required && pb.name == pa.name && exclusive(pa.node, pb.node, depth + 1)) {
            return true;
          }
        }
      }
    }
    return false;
  }

  void check_one_ofs() {
    for (const PendingOneOf& p : pending_one_ofs_) {
      const std::vector<int32_t> alts = node(p.node).alts;
      for (size_t x = 0; x < alts.size(); ++x) {
        for (size_t y = x + 1; y < alts.size(); ++y) {
          if (!exclusive(alts[x], alts[y])) {
            fail<InvalidArgument>(
                "{}: alternatives {} and {} may both match one value, and oneOf "
                "requires exactly one; squeeze supports oneOf only when the "
                "alternatives exclude each other (different types, different "
                "const/enum values, or a required property with different "
                "const values); use anyOf otherwise",
                p.path, x, y);
          }
        }
      }
    }
  }

  // A node that no finite value satisfies would leave the sampler with nothing to draw. Fixed
  // point: a node is satisfiable when its parts are.
  void check_satisfiable() {
    const size_t n = g_.nodes.size();
    std::vector<uint8_t> ok(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t i = 0; i < n; ++i) {
        if (ok[i]) continue;
        const Node& nd = g_.nodes[i];
        bool good = false;
        switch (nd.kind) {
          case Kind::Object:
            good = std::all_of(nd.props.begin(), nd.props.end(), [&](const Prop& p) {
              return !p.required || ok[static_cast<size_t>(p.node)];
            });
            break;
          case Kind::Array: {
            good = true;
            for (uint32_t k = 0; k < nd.min_items && good; ++k) {
              int32_t item = k < nd.prefix.size() ? nd.prefix[k] : nd.items;
              good = item >= 0 && ok[static_cast<size_t>(item)];
              if (k >= nd.prefix.size()) break;  // the rest are all `items`
            }
            break;
          }
          case Kind::AnyOf:
            good = std::any_of(nd.alts.begin(), nd.alts.end(),
                               [&](int32_t a) { return ok[static_cast<size_t>(a)]; });
            break;
          case Kind::Alias:
            good = ok[static_cast<size_t>(nd.target)];
            break;
          default:
            good = true;
        }
        if (good) ok[i] = 1, changed = true;
      }
    }
    if (!ok[static_cast<size_t>(g_.root)]) {
      fail<InvalidArgument>(
          "schema: no finite JSON value satisfies it (a required property or "
          "item that always needs another one of itself)");
    }
  }

  const json& root_;
  Grammar& g_;
  std::map<std::string, int32_t> refs_;
  std::vector<PendingLiteral> pending_literals_;
  std::vector<PendingOneOf> pending_one_ofs_;
  int32_t finish_objects_from_ = 0;
  int depth_ = 0;
  size_t key_bytes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The automaton

// One open value. 24 bytes without padding, so that frames compare with memcmp.
struct Frame {
  int32_t node = -1;
  Kind kind = Kind::Root;
  uint8_t phase = 0;
  uint8_t a = 0;  // string: UTF-8 continuation bytes still due; number: negative
  uint8_t b = 0;  // string: range of the next continuation byte / low surrogate due; number:
                  // fraction digits
  uint32_t count =
      0;  // string: code points; array: items; object: next property; number: integer digits
  int32_t t = 0;   // trie node (literal, object key); string: hex digits left
  uint64_t m = 0;  // number: digits as an integer; string: \u value
};
static_assert(sizeof(Frame) == 24);

struct Link {
  Frame frame;
  uint32_t next;
};

struct Stack {
  Frame top;
  uint32_t rest = 0;   // link index of the frame below, when depth > 0
  uint32_t depth = 0;  // frames below the top
};

struct StateSet {
  uint32_t n = 0;
  std::array<Stack, kMaxStacks> s;
};

// Phases.
enum : uint8_t { R_START, R_AFTER_SPACE, R_IN_VALUE, R_DONE };
enum : uint8_t {
  O_OPEN,
  O_FIRST,        // after '{': a key or '}'
  O_AFTER_COMMA,  // a space or a key
  O_KEY,          // a key
  O_KEY_LIT,      // inside a declared key (t: key trie node)
  O_FREE_KEY,     // a free key is open (a string frame above)
  O_COLON,
  O_AFTER_COLON,  // a space or the value
  O_VALUE,        // the value
  O_IN_VALUE,     // the value is open above
  O_AFTER_VALUE,  // ',' or '}'
};
enum : uint8_t { A_OPEN, A_FIRST, A_AFTER_COMMA, A_ITEM, A_IN_ITEM, A_AFTER_ITEM };
enum : uint8_t { S_OPEN, S_BODY, S_ESC, S_HEX, S_LOW_BS, S_LOW_U };
enum : uint8_t { N_START, N_SIGN, N_ZERO, N_INT, N_DOT, N_FRAC };

// UTF-8 as JSON text may hold it: the continuation bytes a lead byte needs, and the range of the
// first continuation byte (no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF).
constexpr uint8_t kContLo[] = {0x80, 0xA0, 0x80, 0x90, 0x80};
constexpr uint8_t kContHi[] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};
// Sets the continuation count and first-range code for a lead byte; false for a byte that cannot
// start a character.
inline bool utf8_lead(uint8_t c, uint8_t& count, uint8_t& range) {
  if (c >= 0xC2 && c <= 0xDF)
    count = 1, range = 0;
  else if (c == 0xE0)
    count = 2, range = 1;
  else if (c == 0xED)
    count = 2, range = 2;
  else if (c >= 0xE1 && c <= 0xEF)
    count = 2, range = 0;
  else if (c == 0xF0)
    count = 3, range = 3;
  else if (c >= 0xF1 && c <= 0xF3)
    count = 3, range = 0;
  else if (c == 0xF4)
    count = 3, range = 4;
  else
    return false;
  return true;
}

// A token that, inside a string, is nothing but whole characters (no quote, backslash or control
// byte, no character cut at either end) adds its code points to the string and does nothing else.
// Returns that count, or -1 for any other token.
int plain_string_chars(const std::string& bytes) {
  int chars = 0;
  uint8_t pending = 0, range = 0;
  for (unsigned char c : bytes) {
    if (pending > 0) {
      if (c < kContLo[range] || c > kContHi[range]) return -1;
      pending--;
      range = 0;
      continue;
    }
    if (c < 0x20 || c == '"' || c == '\\') return -1;
    if (c >= 0x80 && !utf8_lead(c, pending, range)) return -1;
    chars++;
  }
  return pending == 0 && chars > 0 ? chars : -1;
}

inline int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

const long double kPow10[] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,
                              1e8L,  1e9L,  1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L,
                              1e16L, 1e17L, 1e18L, 1e19L, 1e20L, 1e21L, 1e22L, 1e23L,
                              1e24L, 1e25L, 1e26L, 1e27L, 1e28L, 1e29L, 1e30L, 1e31L};

class Machine {
 public:
  explicit Machine(const Grammar* g) : g_(g) {}

  const Grammar& grammar() const { return *g_; }
  std::vector<Link>& arena() { return arena_; }

  static Stack initial() {
    Stack s;
    s.top.kind = Kind::Root;
    s.top.phase = R_START;
    return s;
  }

  // Feeds byte c to stack s; appends every resulting stack to out.
  void step(Stack s, uint8_t c, StateSet& out) {
    for (;;) {
      Frame& f = s.top;
      switch (f.kind) {
        case Kind::Root:
          if (f.phase == R_START && c == ' ') {
            f.phase = R_AFTER_SPACE;
            emit(s, out);
            return;
          }
          if (f.phase == R_START || f.phase == R_AFTER_SPACE) {
            f.phase = R_IN_VALUE;
            start(s, g_->root, c, out);
          }
          return;
        case Kind::Object:
          step_object(s, c, out);
          return;
        case Kind::Array:
          step_array(s, c, out);
          return;
        case Kind::String:
          step_string(s, c, out);
          return;
        case Kind::Number: {
          const Node& n = node(f.node);
          const int d = c >= '0' && c <= '9' ? c - '0' : -1;
          switch (f.phase) {
            case N_START:
              if (c == '-') {
                f.a = 1;
                f.phase = N_SIGN;
                if (feasible(f, n)) emit(s, out);
                return;
              }
              [[fallthrough]];
            case N_SIGN:
              if (d < 0) return;
              f.phase = d == 0 ? N_ZERO : N_INT;
              f.count = 1;
              f.m = static_cast<uint64_t>(d);
              if (feasible(f, n)) emit(s, out);
              return;
            case N_INT:
              if (d >= 0) {
                if (f.count >= kMaxIntDigits || (n.bounded && f.count >= kMaxBoundedDigits)) return;
                f.count++;
                f.m = f.m * 10 + static_cast<uint64_t>(d);
                if (feasible(f, n)) emit(s, out);
                return;
              }
              [[fallthrough]];
            case N_ZERO:
              if (c == '.' && !n.integer) {
                f.phase = N_DOT;
                if (feasible(f, n)) emit(s, out);
                return;
              }
              if (d >= 0 || !value_ok(f, n)) return;  // no leading zeros
              break;  // the number ended: pop, and feed c to the parent
            case N_DOT:
            case N_FRAC:
              if (d >= 0) {
                if (f.b >= kMaxFracDigits || (n.bounded && f.count + f.b >= kMaxBoundedDigits))
                  return;
                f.b++;
                f.phase = N_FRAC;
                f.m = f.m * 10 + static_cast<uint64_t>(d);
                if (feasible(f, n)) emit(s, out);
                return;
              }
              if (f.phase == N_DOT || !value_ok(f, n)) return;
              break;
            default:
              return;
          }
          s = pop(s);
          continue;
        }
        case Kind::Literal: {
          const int32_t child = g_->lit_child(f.t, c);
          if (child >= 0) {
            f.t = child;
            const LitNode& ln = g_->lits[static_cast<size_t>(child)];
            if (ln.terminal >= 0 && ln.edges.empty()) {
              close(s, out);
            } else {
              emit(s, out);
            }
            return;
          }
          if (g_->lits[static_cast<size_t>(f.t)].terminal < 0) return;
          s = pop(s);  // a literal that can end here (a number) ended: c goes to the parent
          continue;
        }
        default:
          return;
      }
    }
  }

  // The value that s holds can end here (no more bytes needed).
  bool stack_complete(const Stack& s) const {
    if (s.depth == 0) return s.top.phase == R_DONE;
    if (s.depth != 1) return false;
    const Frame& f = s.top;
    if (f.kind == Kind::Number) {
      return (f.phase == N_INT || f.phase == N_ZERO || f.phase == N_FRAC) &&
             value_ok(f, node(f.node));
    }
    if (f.kind == Kind::Literal) return g_->lits[static_cast<size_t>(f.t)].terminal >= 0;
    return false;
  }

 private:
  const Node& node(int32_t i) const { return g_->nodes[static_cast<size_t>(i)]; }

  void emit(const Stack& s, StateSet& out) const {
    for (uint32_t k = 0; k < out.n; ++k) {
      const Stack& o = out.s[k];
      if (o.rest == s.rest && o.depth == s.depth &&
          std::memcmp(&o.top, &s.top, sizeof(Frame)) == 0) {
        return;
      }
    }
    // Beyond the cap, further alternatives are dropped: what is kept is still valid, only less of
    // the schema's language stays reachable.
    if (out.n < kMaxStacks) out.s[out.n++] = s;
  }

  Stack push(const Stack& s, const Frame& f) {
    const auto idx = static_cast<uint32_t>(arena_.size());
    arena_.push_back({s.top, s.rest});
    Stack r;
    r.top = f;
    r.rest = idx;
    r.depth = s.depth + 1;
    return r;
  }

  // Removes the top frame and tells the parent that its child value is complete.
  Stack pop(const Stack& s) const {
    const Link& l = arena_[s.rest];
    Stack r;
    r.top = l.frame;
    r.rest = l.next;
    r.depth = s.depth - 1;
    Frame& p = r.top;
    switch (p.kind) {
      case Kind::Root:
        p.phase = R_DONE;
        break;
      case Kind::Object:
        if (p.phase == O_FREE_KEY) {
          p.phase = O_COLON;
        } else {
          p.phase = O_AFTER_VALUE;
          p.count++;
        }
        break;
      case Kind::Array:
        p.phase = A_AFTER_ITEM;
        p.count++;
        break;
      default:
        break;
    }
    return r;
  }

  // The top value closed on byte c (already consumed).
  void close(const Stack& s, StateSet& out) const { emit(pop(s), out); }

  // A value of node i starts with byte c above s (whose top already waits for it).
  void start(const Stack& s, int32_t i, uint8_t c, StateSet& out) {
    const Node& n = node(i);
    switch (n.kind) {
      case Kind::AnyOf:
        for (int32_t a : n.alts) start(s, a, c, out);
        return;
      case Kind::Any: {
        int32_t target = -1;
        if (c == '{')
          target = g_->any_object;
        else if (c == '[')
          target = g_->any_array;
        else if (c == '"')
          target = g_->any_string;
        else if (c == '-' || (c >= '0' && c <= '9'))
          target = g_->any_number;
        else if (c == 't' || c == 'f' || c == 'n')
          target = g_->any_literal;
        if (target >= 0) start(s, target, c, out);
        return;
      }
      default:
        break;
    }
    // Cheap first-byte checks before touching the arena.
    switch (n.kind) {
      case Kind::Object:
        if (c != '{') return;
        break;
      case Kind::Array:
        if (c != '[') return;
        break;
      case Kind::String:
        if (c != '"') return;
        break;
      case Kind::Number:
        if (c != '-' && (c < '0' || c > '9')) return;
        break;
      case Kind::Literal:
        if (g_->lit_child(n.trie, c) < 0) return;
        break;
      default:
        return;
    }
    // At the depth limit no container opens, but a container leaves room for its keys and scalar
    // values, so that what is open can always still be completed and closed.
    const bool container = n.kind == Kind::Object || n.kind == Kind::Array;
    if (s.depth + (container ? 2u : 1u) >= kMaxDepth) return;
    Frame f;
    f.node = i;
    f.kind = n.kind;
    if (n.kind == Kind::Literal) f.t = n.trie;
    step(push(s, f), c, out);
  }

  int32_t item_node(const Node& n, uint32_t k) const {
    return k < n.prefix.size() ? n.prefix[k] : n.items;
  }

  void step_object(Stack& s, uint8_t c, StateSet& out) {
    Frame& f = s.top;
    const Node& n = node(f.node);
    switch (f.phase) {
      case O_OPEN:
        if (c != '{') return;
        f.phase = O_FIRST;
        emit(s, out);
        return;
      case O_FIRST:
        if (c == '}') {
          if (!n.free_keys && n.required_from[0]) return;
          close(s, out);
          return;
        }
        break;
      case O_AFTER_COMMA:
        if (c == ' ') {
          f.phase = O_KEY;
          emit(s, out);
          return;
        }
        break;
      case O_KEY:
        break;
      case O_KEY_LIT: {
        const int32_t child = g_->lit_child(f.t, c);
        if (child < 0) return;
        const int32_t prop = g_->lits[static_cast<size_t>(child)].terminal;
        if (prop >= 0) {
          f.count = static_cast<uint32_t>(prop);
          f.phase = O_COLON;
        } else {
          f.t = child;
        }
        emit(s, out);
        return;
      }
      case O_COLON:
        if (c != ':') return;
        f.phase = O_AFTER_COLON;
        emit(s, out);
        return;
      case O_AFTER_COLON:
        if (c == ' ') {
          f.phase = O_VALUE;
          emit(s, out);
          return;
        }
        [[fallthrough]];
      case O_VALUE: {
        f.phase = O_IN_VALUE;
        start(s, n.free_keys ? (n.extra >= 0 ? n.extra : g_->any) : n.props[f.count].node, c, out);
        return;
      }
      case O_AFTER_VALUE:
        if (c == ',') {
          if (!n.free_keys && f.count >= n.props.size()) return;
          f.phase = O_AFTER_COMMA;
          emit(s, out);
        } else if (c == '}') {
          if (!n.free_keys && n.required_from[f.count]) return;
          close(s, out);
        }
        return;
      default:
        return;
    }
    // A key starts.
    if (c != '"') return;
    if (n.free_keys) {
      if (s.depth + 1 >= kMaxDepth) return;
      f.phase = O_FREE_KEY;
      Frame k;
      k.node = g_->any_string;
      k.kind = Kind::String;
      step(push(s, k), c, out);
      return;
    }
    if (f.count >= n.props.size()) return;
    const int32_t child = g_->lit_child(n.key_trie[f.count], c);
    if (child < 0) return;
    f.t = child;
    f.phase = O_KEY_LIT;
    emit(s, out);
  }

  void step_array(Stack& s, uint8_t c, StateSet& out) {
    Frame& f = s.top;
    const Node& n = node(f.node);
    switch (f.phase) {
      case A_OPEN:
        if (c != '[') return;
        f.phase = A_FIRST;
        emit(s, out);
        return;
      case A_FIRST:
        if (c == ']') {
          if (n.min_items > 0) return;
          close(s, out);
          return;
        }
        if (n.max_items == 0) return;
        break;
      case A_AFTER_COMMA:
        if (c == ' ') {
          f.phase = A_ITEM;
          emit(s, out);
          return;
        }
        break;
      case A_ITEM:
        break;
      case A_AFTER_ITEM:
        if (c == ',') {
          if (f.count >= n.max_items || item_node(n, f.count) < 0) return;
          f.phase = A_AFTER_COMMA;
          emit(s, out);
        } else if (c == ']') {
          if (f.count < n.min_items) return;
          close(s, out);
        }
        return;
      default:
        return;
    }
    const int32_t item = item_node(n, f.count);
    if (item < 0) return;
    f.phase = A_IN_ITEM;
    start(s, item, c, out);
  }

  void step_string(Stack& s, uint8_t c, StateSet& out) const {
    Frame& f = s.top;
    const Node& n = node(f.node);
    switch (f.phase) {
      case S_OPEN:
        if (c != '"') return;
        f.phase = S_BODY;
        emit(s, out);
        return;
      case S_BODY:
        if (f.a > 0) {
          // Continuation byte; the first one after some lead bytes has a narrower range (no
          // overlong forms, no surrogates, nothing above U+10FFFF).
          if (c < kContLo[f.b] || c > kContHi[f.b]) return;
          f.a--;
          f.b = 0;
          emit(s, out);
          return;
        }
        if (c == '"') {
          if (f.count < n.min_len) return;
          close(s, out);
          return;
        }
        if (c < 0x20) return;  // control characters must be escaped
        if (f.count >= n.max_len) return;
        if (c == '\\') {
          f.phase = S_ESC;
        } else if (c >= 0x80) {
          if (!utf8_lead(c, f.a, f.b)) return;
        }
        f.count++;
        emit(s, out);
        return;
      case S_ESC:
        if (c == 'u') {
          f.phase = S_HEX;
          f.t = 4;
          f.m = 0;
          emit(s, out);
          return;
        }
        if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' &&
            c != 't') {
          return;
        }
        f.phase = S_BODY;
        emit(s, out);
        return;
      case S_HEX: {
        const int h = hex_value(c);
        if (h < 0) return;
        f.m = f.m * 16 + static_cast<uint64_t>(h);
        f.t--;
        if (f.t == 2) {
          // The first byte tells surrogates apart: a low one (DC-DF) only right after a high one,
          // and right after a high one nothing else, so that the text decodes (nlohmann refuses
          // lone surrogates).
          const bool low = f.m >= 0xDC && f.m <= 0xDF;
          if (low != (f.b == 1)) return;
        }
        if (f.t == 0) {
          if (f.b == 0 && f.m >= 0xD800 && f.m <= 0xDBFF) {
            f.phase = S_LOW_BS;
            f.b = 1;
          } else {
            f.phase = S_BODY;
            f.b = 0;
          }
        }
        emit(s, out);
        return;
      }
      case S_LOW_BS:
        if (c != '\\') return;
        f.phase = S_LOW_U;
        emit(s, out);
        return;
      case S_LOW_U:
        if (c != 'u') return;
        f.phase = S_HEX;
        f.t = 4;
        f.m = 0;
        emit(s, out);
        return;
      default:
        return;
    }
  }

  // Bounds: the value written so far (sign, digits m, fraction digits b) against [lo, hi].
  static long double magnitude(const Frame& f) {
    return static_cast<long double>(f.m) / kPow10[f.b];
  }

  static bool value_ok(const Frame& f, const Node& n) {
    if (!n.bounded) return true;
    // m has at most 18 digits: exact in long double; one rounding for the division, far below half
    // a double's ulp, so the check agrees with a validator that parses the text to a double.
    long double x = magnitude(f);
    if (f.a) x = -x;
    const long double lo = n.lo, hi = n.hi;
    if (x < lo || (n.lo_excl && x == lo)) return false;
    if (x > hi || (n.hi_excl && x == hi)) return false;
    return true;
  }

  // Whether some completion of the digits so far lies within the bounds.
  static bool feasible(const Frame& f, const Node& n) {
    if (!n.bounded) return true;
    auto overlaps = [&](long double a, long double b) {  // magnitudes in [a, b)
      long double x1, x2;                                // signed values in [x1, x2) or (x1, x2]
      if (f.a) {
        x1 = -b, x2 = -a;
      } else {
        x1 = a, x2 = b;
      }
      if (n.integer) {
        // Integers in the signed range (both ends integral here).
        long double i1 = f.a ? x1 + 1 : x1, i2 = f.a ? x2 : x2 - 1;
        long double ilo = n.lo_excl ? std::floor(static_cast<long double>(n.lo)) + 1
                                    : std::ceil(static_cast<long double>(n.lo));
        long double ihi = n.hi_excl ? std::ceil(static_cast<long double>(n.hi)) - 1
                                    : std::floor(static_cast<long double>(n.hi));
        return i1 <= i2 && i1 <= ihi && i2 >= ilo;
      }
      const long double lo = n.lo, hi = n.hi;
      if (f.a) {  // (x1, x2]
        return (n.lo_excl ? x2 > lo : x2 >= lo) && x1 < hi;
      }
      return (n.hi_excl ? x1 < hi : x1 <= hi) && x2 > lo;  // [x1, x2)
    };
    switch (f.phase) {
      case N_SIGN:
        return overlaps(0, kPow10[kMaxIntDigits]);
      case N_ZERO:
        return overlaps(0, 1);
      case N_INT: {
        const long double p = static_cast<long double>(f.m);
        for (uint32_t k = 0; f.count + k <= kMaxIntDigits; ++k) {
          if (overlaps(p * kPow10[k], (p + 1) * kPow10[k])) return true;
        }
        return false;
      }
      case N_DOT:
        return overlaps(magnitude(f), magnitude(f) + 1);
      case N_FRAC:
        return overlaps(magnitude(f), magnitude(f) + 1 / kPow10[f.b]);
      default:
        return true;
    }
  }

  const Grammar* g_;
  std::vector<Link> arena_;
};

// ---------------------------------------------------------------------------------------------
// Vocabulary trie and the constraint

struct TrieNode {
  uint8_t byte = 0;
  uint16_t depth = 0;  // 1 for the first byte of a token
  uint32_t end = 0;    // preorder index just past this node's subtree
  uint32_t tok_begin = 0, tok_end = 0;
};

// Token byte strings in preorder; each node's tokens are trie_tokens[tok_begin, tok_end).
struct VocabTrie {
  std::vector<TrieNode> nodes;
  std::vector<int32_t> tokens;
};

// What depends on the tokenizer only; shared by every schema's factory (see vocab_for).
struct Vocab {
  VocabTrie trie;         // every token that can appear in the output
  VocabTrie string_trie;  // the tokens that are not plain string text (see plain_string_chars)
  std::vector<int32_t> plain_ids;        // plain string tokens, fewest code points first
  std::vector<uint32_t> plain_chars;     // their code points, ascending
  std::vector<std::string> token_bytes;  // empty: never allowed (control, unused, empty)
  std::vector<int32_t> eog;
  int32_t n_vocab = 0;
  size_t max_len = 0;
};

struct Shared {
  Grammar grammar;
  std::shared_ptr<const Vocab> vocab;
};

VocabTrie build_trie(const std::vector<std::string>& token_bytes, const std::vector<int32_t>& ids) {
  VocabTrie trie;
  std::vector<std::pair<std::string_view, int32_t>> items;
  for (int32_t id : ids) items.emplace_back(token_bytes[static_cast<size_t>(id)], id);
  std::sort(items.begin(), items.end());
  std::vector<uint32_t> path;  // node index per depth
  std::string_view prev;
  for (const auto& [bytes, id] : items) {
    size_t common = 0;
    while (common < path.size() && common < bytes.size() && bytes[common] == prev[common]) ++common;
    path.resize(common);
    for (size_t d = common; d < bytes.size(); ++d) {
      TrieNode n;
      n.byte = static_cast<uint8_t>(bytes[d]);
      n.depth = static_cast<uint16_t>(d + 1);
      n.tok_begin = n.tok_end = static_cast<uint32_t>(trie.tokens.size());
      path.push_back(static_cast<uint32_t>(trie.nodes.size()));
      trie.nodes.push_back(n);
    }
    // Sorted order: a token ends at the deepest node of its path, after every token of the nodes
    // before it, so each node's tokens are one contiguous run.
    trie.tokens.push_back(id);
    trie.nodes[path.back()].tok_end = static_cast<uint32_t>(trie.tokens.size());
    prev = bytes;
  }
  std::vector<uint32_t> open;
  for (uint32_t i = 0; i < trie.nodes.size(); ++i) {
    while (!open.empty() && trie.nodes[open.back()].depth >= trie.nodes[i].depth) {
      trie.nodes[open.back()].end = i;
      open.pop_back();
    }
    open.push_back(i);
  }
  for (uint32_t i : open) trie.nodes[i].end = static_cast<uint32_t>(trie.nodes.size());
  return trie;
}

void build_tries(Vocab& sh) {
  std::vector<int32_t> all, other;
  std::vector<std::pair<int, int32_t>> plain;
  for (int32_t id = 0; id < sh.n_vocab; ++id) {
    const std::string& b = sh.token_bytes[static_cast<size_t>(id)];
    if (b.empty()) continue;
    all.push_back(id);
    sh.max_len = std::max(sh.max_len, b.size());
    const int chars = plain_string_chars(b);
    if (chars > 0) {
      plain.emplace_back(chars, id);
    } else {
      other.push_back(id);
    }
  }
  std::sort(plain.begin(), plain.end());
  for (const auto& [chars, id] : plain) {
    sh.plain_ids.push_back(id);
    sh.plain_chars.push_back(static_cast<uint32_t>(chars));
  }
  sh.trie = build_trie(sh.token_bytes, all);
  sh.string_trie = build_trie(sh.token_bytes, other);
}

class JsonConstraint final : public TokenConstraint {
 public:
  explicit JsonConstraint(std::shared_ptr<const Shared> shared)
      : shared_(std::move(shared)),
        machine_(&shared_->grammar),
        levels_(shared_->vocab->max_len + 1) {
    state_.n = 1;
    state_.s[0] = Machine::initial();
    allowed_.resize(static_cast<size_t>(shared_->vocab->n_vocab));
  }

  void apply(std::span<float> logits) override {
    const Vocab& sh = *shared_->vocab;
    std::fill(allowed_.begin(), allowed_.end(), uint8_t{0});
    if (!finished()) {
      const Frame& top = state_.s[0].top;
      if (state_.n == 1 && top.kind == Kind::String && top.phase == S_BODY && top.a == 0) {
        // Inside a string nearly every token is allowed; walking them all through the automaton
        // is the slow case. Plain text tokens only add code points: allow those that fit at once,
        // and walk only the others (quotes, escapes, partial characters).
        const uint32_t max_len = shared_->grammar.nodes[static_cast<size_t>(top.node)].max_len;
        const uint32_t room = max_len - std::min(max_len, top.count);
        const auto fit = static_cast<size_t>(
            std::upper_bound(sh.plain_chars.begin(), sh.plain_chars.end(), room) -
            sh.plain_chars.begin());
        for (size_t k = 0; k < fit; ++k) allowed_[static_cast<size_t>(sh.plain_ids[k])] = 1;
        walk(sh.string_trie);
      } else {
        walk(sh.trie);
      }
    }
    if (complete()) {
      for (int32_t id : sh.eog) allowed_[static_cast<size_t>(id)] = 1;
    }
    const size_t n = std::min(logits.size(), allowed_.size());
    for (size_t i = 0; i < n; ++i) {
      if (!allowed_[i]) logits[i] = -std::numeric_limits<float>::infinity();
    }
    for (size_t i = n; i < logits.size(); ++i) logits[i] = -std::numeric_limits<float>::infinity();
  }

  void accept(int32_t token) override {
    const Vocab& sh = *shared_->vocab;
    if (token < 0 || token >= sh.n_vocab) {
      fail<InvalidArgument>("token {} is out of range: the vocabulary has {} tokens", token,
                            sh.n_vocab);
    }
    if (std::find(sh.eog.begin(), sh.eog.end(), token) != sh.eog.end()) {
      if (!complete()) {
        fail<InvalidArgument>("end-of-generation token {} came before the JSON value was complete",
                              token);
      }
      return;
    }
    const std::string& bytes = sh.token_bytes[static_cast<size_t>(token)];
    std::vector<Link>& arena = machine_.arena();
    const size_t mark = arena.size();
    StateSet cur = state_;
    for (unsigned char c : bytes) {
      StateSet next;
      for (uint32_t k = 0; k < cur.n; ++k) machine_.step(cur.s[k], c, next);
      cur = next;
      if (cur.n == 0) break;
    }
    if (bytes.empty() || cur.n == 0) {
      arena.resize(mark);
      fail<InvalidArgument>(
          "token {} cannot continue the JSON output here (the constraint did not "
          "allow it)",
          token);
    }
    state_ = cur;
    compact();
    update_finished();
  }

  bool complete() const override {
    for (uint32_t k = 0; k < state_.n; ++k) {
      if (machine_.stack_complete(state_.s[k])) return true;
    }
    return false;
  }

  bool finished() const override { return finished_; }

 private:
  // Marks the tokens of `trie` whose bytes the automaton accepts from the current state: a depth
  // first walk that steps once per trie node and skips the subtree of a node no stack survives.
  void walk(const VocabTrie& trie) {
    std::vector<Link>& arena = machine_.arena();
    const size_t mark = arena.size();
    levels_[0] = state_;
    const size_t n_nodes = trie.nodes.size();
    for (size_t i = 0; i < n_nodes;) {
      const TrieNode& tn = trie.nodes[i];
      const StateSet& in = levels_[tn.depth - 1u];
      StateSet& out = levels_[tn.depth];
      out.n = 0;
      for (uint32_t k = 0; k < in.n; ++k) machine_.step(in.s[k], tn.byte, out);
      if (out.n == 0) {
        i = tn.end;
        continue;
      }
      for (uint32_t t = tn.tok_begin; t < tn.tok_end; ++t) {
        allowed_[static_cast<size_t>(trie.tokens[t])] = 1;
      }
      ++i;
    }
    arena.resize(mark);
  }

  // Finished: every stack has closed its top-level value, or the value is complete and no byte at
  // all extends it (a top-level number at its last allowed digit, "-3" under maximum -3), so that
  // the server ends the choice instead of asking for a token only end-of-generation can fill.
  void update_finished() {
    finished_ = true;
    for (uint32_t k = 0; k < state_.n; ++k) {
      if (!(state_.s[k].depth == 0 && state_.s[k].top.phase == R_DONE)) finished_ = false;
    }
    if (finished_ || !complete()) return;
    std::vector<Link>& arena = machine_.arena();
    const size_t mark = arena.size();
    bool extends = false;
    for (int c = 0; c < 256 && !extends; ++c) {
      StateSet next;
      for (uint32_t k = 0; k < state_.n; ++k)
        machine_.step(state_.s[k], static_cast<uint8_t>(c), next);
      extends = next.n > 0;
    }
    arena.resize(mark);
    finished_ = !extends;
  }

  // Keeps only the links that the current stacks reach, so that the arena stays as small as the
  // open values (O(depth x stacks)), not the length of the output.
  void compact() {
    std::vector<Link>& arena = machine_.arena();
    std::vector<Link> fresh;
    std::vector<Frame> chain;
    for (uint32_t k = 0; k < state_.n; ++k) {
      Stack& s = state_.s[k];
      chain.clear();
      uint32_t at = s.rest;
      for (uint32_t d = 0; d < s.depth; ++d) {
        chain.push_back(arena[at].frame);
        at = arena[at].next;
      }
      uint32_t next = 0;
      for (size_t d = chain.size(); d-- > 0;) {
        fresh.push_back({chain[d], next});
        next = static_cast<uint32_t>(fresh.size() - 1);
      }
      s.rest = next;
    }
    arena.swap(fresh);
  }

  std::shared_ptr<const Shared> shared_;
  Machine machine_;
  StateSet state_;
  std::vector<StateSet> levels_;  // [max token length + 1]
  std::vector<uint8_t> allowed_;  // [n_vocab]
  bool finished_ = false;
};

// The vocabulary tables of a tokenizer, built once: a server makes a factory per request, and
// building the tries of a 32,000-token vocabulary costs about 10 ms. Keyed by the tokenizer's
// address and a fingerprint of its vocabulary, so that a new tokenizer at the address of a freed
// one is not mistaken for it.
std::shared_ptr<const Vocab> vocab_for(const Tokenizer& tokenizer) {
  uint64_t fingerprint = static_cast<uint64_t>(tokenizer.n_vocab());
  auto mix = [&](uint64_t x) { fingerprint = (fingerprint ^ x) * 0x100000001B3ull + (x >> 7); };
  for (int32_t id = 0; id < tokenizer.n_vocab(); ++id) {
    mix(std::hash<std::string_view>{}(tokenizer.token_text(id)));
    mix(static_cast<uint64_t>(tokenizer.token_type(id)));
  }
  for (int32_t id : tokenizer.eog_ids()) mix(static_cast<uint64_t>(id));
  mix(static_cast<uint64_t>(tokenizer.model()));

  // The few most recently used vocabularies stay alive between requests (a server usually has one
  // tokenizer); a few MB each.
  constexpr size_t kKept = 4;
  using Key = std::pair<const Tokenizer*, uint64_t>;
  static std::mutex mutex;
  static std::vector<std::pair<Key, std::shared_ptr<const Vocab>>> cache;  // most recent first
  const Key key(&tokenizer, fingerprint);
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (size_t i = 0; i < cache.size(); ++i) {
      if (cache[i].first == key) {
        std::rotate(cache.begin(), cache.begin() + static_cast<std::ptrdiff_t>(i),
                    cache.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        return cache.front().second;
      }
    }
  }
  auto v = std::make_shared<Vocab>();
  v->n_vocab = tokenizer.n_vocab();
  v->token_bytes.resize(static_cast<size_t>(v->n_vocab));
  for (int32_t id = 0; id < v->n_vocab; ++id) {
    const TokenType type = tokenizer.token_type(id);
    // Special tokens never: control and unknown ones have no text of their own, and user-defined
    // ones (<think>, tool-call markers) mean something to the chat template and the decoder even
    // where their text would fit a string. Their text stays reachable through ordinary tokens.
    if (type == TokenType::Control || type == TokenType::Unknown || type == TokenType::Unused ||
        type == TokenType::UserDefined) {
      continue;
    }
    if (tokenizer.is_eog(id)) continue;
    v->token_bytes[static_cast<size_t>(id)] = tokenizer.token_bytes(id);
  }
  v->eog = tokenizer.eog_ids();
  build_tries(*v);
  std::lock_guard<std::mutex> lock(mutex);
  cache.insert(cache.begin(), {key, v});
  if (cache.size() > kKept) cache.pop_back();
  return v;
}

}  // namespace

std::function<std::unique_ptr<TokenConstraint>()> make_json_constraint_factory(
    const Tokenizer& tokenizer, const nlohmann::ordered_json& schema) {
  auto shared = std::make_shared<Shared>();
  SchemaCompiler(schema, shared->grammar).compile_root();
  shared->vocab = vocab_for(tokenizer);
  std::shared_ptr<const Shared> frozen = shared;
  return [frozen]() -> std::unique_ptr<TokenConstraint> {
    return std::make_unique<JsonConstraint>(frozen);
  };
}

std::vector<JsonPrefixCheck> check_json_prefixes(const nlohmann::ordered_json& schema,
                                                 const std::vector<std::string>& texts) {
  Grammar g;
  SchemaCompiler(schema, g).compile_root();
  Machine m(&g);
  std::vector<JsonPrefixCheck> results;
  for (const std::string& text : texts) {
    m.arena().clear();
    StateSet cur;
    cur.n = 1;
    cur.s[0] = Machine::initial();
    JsonPrefixCheck r;
    bool refused = false;
    for (unsigned char c : text) {
      StateSet next;
      for (uint32_t k = 0; k < cur.n; ++k) m.step(cur.s[k], c, next);
      if (next.n == 0) {
        refused = true;
        break;
      }
      cur = next;
      r.accepted++;
    }
    if (!refused) {
      r.valid_prefix = true;
      for (uint32_t k = 0; k < cur.n; ++k) r.complete = r.complete || m.stack_complete(cur.s[k]);
    }
    results.push_back(r);
  }
  return results;
}

JsonPrefixCheck check_json_prefix(const nlohmann::ordered_json& schema, const std::string& text) {
  return check_json_prefixes(schema, {text})[0];
}

}  // namespace sq
