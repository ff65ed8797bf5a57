// Template values: construction, truthiness, JSON in and out, and how values print. Printing and
// tojson follow the reference renderer byte for byte (numbers as JavaScript writes them, lists and
// dicts as JSON with ", " and ": ", strings without ASCII escaping).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "base/error.h"
#include "chat/jinja.h"
#include "chat/jinja_util.h"
#include "tokenizer/unicode.h"

namespace sq::jinja {

namespace {
constexpr int kMaxNesting = 128;  // lists and dicts inside each other, when printed or compared
}  // namespace

// A string key matches a key written as a string only, not the number it looks like.
const Value* Dict::find(std::string_view key) const {
  for (size_t k = 0; k < items.size(); ++k) {
    if (items[k].first == key && (key_values.empty() || key_values[k].kind == Kind::String)) {
      return &items[k].second;
    }
  }
  return nullptr;
}

Value* Dict::find(std::string_view key) {
  return const_cast<Value*>(static_cast<const Dict*>(this)->find(key));
}

void Dict::set(const std::string& key, Value value) {
  if (Value* v = find(key)) {
    *v = std::move(value);
  } else {
    items.emplace_back(key, std::move(value));
    if (!key_values.empty()) key_values.push_back(Value::string(key));
  }
}

void Dict::set_key(const Value& key, Value value) {
  if (key.kind == Kind::String) {
    set(key.s, std::move(value));
    return;
  }
  const std::string text = to_display(key);
  for (size_t k = 0; k < key_values.size(); ++k) {
    if (items[k].first == text && key_values[k].kind == key.kind) {
      items[k].second = std::move(value);
      return;
    }
  }
  if (key_values.empty()) {
    for (const auto& kv : items) key_values.push_back(Value::string(kv.first));
  }
  items.emplace_back(text, std::move(value));
  key_values.push_back(key);
}

Value Dict::key_at(size_t k) const {
  return key_values.empty() ? Value::string(items[k].first) : key_values[k];
}

void Dict::erase(size_t k) {
  items.erase(items.begin() + static_cast<std::ptrdiff_t>(k));
  if (!key_values.empty()) key_values.erase(key_values.begin() + static_cast<std::ptrdiff_t>(k));
}

const Value* Args::keyword(std::string_view name) const {
  for (const auto& [k, v] : keywords) {
    if (k == name) return &v;
  }
  return nullptr;
}

const Value* Args::get(size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  return name.empty() ? nullptr : keyword(name);
}

namespace {

// Containers are freed one at a time, never recursively: a template can nest lists a hundred
// thousand deep (set ns.x = [ns.x] in a loop), and freeing such a chain by recursion would run
// off the stack. A container freed while another is being freed waits in a queue.
thread_local bool t_freeing = false;
thread_local std::vector<List*> t_pending_lists;
thread_local std::vector<Dict*> t_pending_dicts;

void drain() {
  while (!t_pending_lists.empty() || !t_pending_dicts.empty()) {
    if (!t_pending_lists.empty()) {
      List* l = t_pending_lists.back();
      t_pending_lists.pop_back();
      delete l;
    } else {
      Dict* d = t_pending_dicts.back();
      t_pending_dicts.pop_back();
      delete d;
    }
  }
}

std::vector<List*>& pending(List*) { return t_pending_lists; }
std::vector<Dict*>& pending(Dict*) { return t_pending_dicts; }

// The shared_ptr deleter of lists and dicts: frees at once unless a free is already under way on
// this thread, in which case the container joins the queue that free drains.
template <class T>
struct DeferredDeleter {
  void operator()(T* p) const {
    if (t_freeing) {
      pending(p).push_back(p);
      return;
    }
    t_freeing = true;
    delete p;
    drain();
    t_freeing = false;
  }
};

struct ArenaState {
  std::vector<std::weak_ptr<List>> lists;
  std::vector<std::weak_ptr<Dict>> dicts;
  size_t compact_at = 4096;

  // Forgets containers already freed, so that the arena stays proportional to what is alive.
  void maybe_compact() {
    if (lists.size() + dicts.size() < compact_at) return;
    std::erase_if(lists, [](const auto& w) { return w.expired(); });
    std::erase_if(dicts, [](const auto& w) { return w.expired(); });
    compact_at = std::max<size_t>(4096, 2 * (lists.size() + dicts.size()));
  }
};
thread_local ArenaState* t_arena = nullptr;

}  // namespace

struct ContainerArena::State : ArenaState {};

ContainerArena::ContainerArena() : state_(std::make_unique<State>()), previous_(t_arena) {
  t_arena = state_.get();
}

ContainerArena::~ContainerArena() {
  release();
  t_arena = static_cast<ArenaState*>(previous_);
}

void ContainerArena::release() {
  // Emptying every container the render made breaks any cycle among them (l.append(l)), which
  // shared ownership alone would leak.
  for (auto& w : state_->lists) {
    if (auto p = w.lock()) p->clear();
  }
  for (auto& w : state_->dicts) {
    if (auto p = w.lock()) {
      p->items.clear();
      p->key_values.clear();
    }
  }
  state_->lists.clear();
  state_->dicts.clear();
}

Value Value::make_list(List items) {
  Value v;
  v.kind = Kind::List;
  v.list = std::shared_ptr<List>(new List(std::move(items)), DeferredDeleter<List>{});
  if (t_arena != nullptr) {
    t_arena->lists.push_back(v.list);
    t_arena->maybe_compact();
  }
  return v;
}

Value Value::make_dict(Dict d) {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::shared_ptr<Dict>(new Dict(std::move(d)), DeferredDeleter<Dict>{});
  if (t_arena != nullptr) {
    t_arena->dicts.push_back(v.dict);
    t_arena->maybe_compact();
  }
  return v;
}

Value Value::make_namespace(Dict d) {
  Value v = make_dict(std::move(d));
  v.kind = Kind::Namespace;
  return v;
}

Value deep_copy(const Value& v, int depth) {
  if (depth > kMaxNesting) {
    fail<InvalidArgument>("chat template input nests deeper than {} levels", kMaxNesting);
  }
  if (v.kind == Kind::List) {
    List items;
    items.reserve(v.list->size());
    for (const Value& x : *v.list) items.push_back(deep_copy(x, depth + 1));
    Value out = Value::make_list(std::move(items));
    out.tuple = v.tuple;
    return out;
  }
  if (v.kind == Kind::Dict || v.kind == Kind::Namespace) {
    Dict d;
    d.items.reserve(v.dict->items.size());
    for (const auto& [k, x] : v.dict->items) d.items.emplace_back(k, deep_copy(x, depth + 1));
    d.key_values = v.dict->key_values;
    Value out = Value::make_dict(std::move(d));
    out.kind = v.kind;
    return out;
  }
  return v;
}

Value Value::function(NativeFn f) {
  Value v;
  v.kind = Kind::Function;
  v.fn = std::make_shared<const NativeFn>(std::move(f));
  return v;
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return b;
    case Kind::Int: return i != 0;
    case Kind::Float: return f != 0 && !std::isnan(f);
    case Kind::String: return !s.empty();
    case Kind::List: return !list->empty();
    case Kind::Dict: return !dict->items.empty();
    case Kind::Namespace:
    case Kind::Function: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind) {
    case Kind::Undefined: return "undefined";
    case Kind::None: return "none";
    case Kind::Bool: return "boolean";
    case Kind::Int: return "integer";
    case Kind::Float: return "float";
    case Kind::String: return "string";
    case Kind::List: return tuple ? "tuple" : "list";
    case Kind::Dict: return "dict";
    case Kind::Namespace: return "namespace";
    case Kind::Function: return "function";
  }
  return "?";
}

namespace {

template <typename Json>
Value from_json_at(const Json& j, int depth) {
  if (depth > kMaxNesting) {
    fail<InvalidArgument>("chat template input nests deeper than {} levels", kMaxNesting);
  }
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return Value::integer(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::floating(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float: {
      // JavaScript has one number type: a value with no fraction is an integer to the reference.
      const double d = j.template get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18) {
        return Value::integer(static_cast<int64_t>(d));
      }
      return Value::floating(d);
    }
    case nlohmann::json::value_t::string: return Value::string(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(from_json_at(x, depth + 1));
      return Value::make_list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      d.items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        d.items.emplace_back(it.key(), from_json_at(it.value(), depth + 1));
      }
      return Value::make_dict(std::move(d));
    }
    default: return Value::none();
  }
}

nlohmann::json to_json_at(const Value& v, int depth) {
  if (depth > kMaxNesting) {
    fail<InvalidArgument>("a template value nests deeper than {} levels", kMaxNesting);
  }
  switch (v.kind) {
    case Kind::Bool: return v.b;
    case Kind::Int: return v.i;
    case Kind::Float: return v.f;
    case Kind::String: return v.s;
    case Kind::List: {
      nlohmann::json a = nlohmann::json::array();
      for (const Value& x : *v.list) a.push_back(to_json_at(x, depth + 1));
      return a;
    }
    case Kind::Dict:
    case Kind::Namespace: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& [k, x] : v.dict->items) o[k] = to_json_at(x, depth + 1);
      return o;
    }
    default: return nullptr;
  }
}

// JSON.stringify's escaping; with ensure_ascii, every UTF-16 unit from U+007F up as \uXXXX.
void append_json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t k = 0; k < s.size();) {
    const auto c = static_cast<unsigned char>(s[k]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20 || (ensure_ascii && c == 0x7f)) {
            out += fmt::format("\\u{:04x}", c);
          } else {
            out += static_cast<char>(c);
          }
      }
      ++k;
      continue;
    }
    size_t len = 0;
    const uint32_t cp = utf8_decode(s, k, &len);
    if (ensure_ascii) {
      if (cp >= 0x10000) {
        const uint32_t u = cp - 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (u >> 10), 0xDC00 + (u & 0x3FF));
      } else {
        out += fmt::format("\\u{:04x}", cp);
      }
    } else {
      utf8_append(out, cp);
    }
    k += len;
  }
  out += '"';
}

// An approximation of JavaScript's localeCompare (ICU root collation) on the keys tojson sorts:
// punctuation before digits before letters, letters without regard to case first, then lower
// case before upper case.
int collation_class(uint32_t c) {
  if (c >= '0' && c <= '9') return 1;
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return 2;
  return 0;
}
bool locale_less(const std::string& a, const std::string& b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t k = 0; k < n; ++k) {
    const auto ca = static_cast<unsigned char>(a[k]);
    const auto cb = static_cast<unsigned char>(b[k]);
    const uint32_t la = (ca >= 'A' && ca <= 'Z') ? ca + 32 : ca;
    const uint32_t lb = (cb >= 'A' && cb <= 'Z') ? cb + 32 : cb;
    if (la == lb) continue;
    const int xa = collation_class(la), xb = collation_class(lb);
    if (xa != xb) return xa < xb;
    return la < lb;
  }
  if (a.size() != b.size()) return a.size() < b.size();
  for (size_t k = 0; k < n; ++k) {
    if (a[k] != b[k]) return a[k] > b[k];  // lower case (larger code) first
  }
  return false;
}

struct JsonWriter {
  int indent;
  bool sort_keys;
  bool ensure_ascii;
  bool undefined_as_null;
  std::string item_sep;
  std::string key_sep;
  size_t max_size;
  std::string out;

  void check() {
    if (out.size() > max_size) {
      fail<InvalidArgument>("a JSON text in the template grew past {} bytes", max_size);
    }
  }
  void newline(int depth) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(depth), ' ');
  }
  void write(const Value& v, int depth) {
    if (depth > kMaxNesting) {
      fail<InvalidArgument>("a template value nests deeper than {} levels (or contains itself)",
                            kMaxNesting);
    }
    switch (v.kind) {
      case Kind::None: out += "null"; return;
      case Kind::Undefined: out += undefined_as_null ? "null" : "undefined"; return;
      case Kind::Bool: out += v.b ? "true" : "false"; return;
      case Kind::Int: out += std::to_string(v.i); return;
      case Kind::Float: out += std::isfinite(v.f) ? js_number(v.f) : "null"; return;
      case Kind::String: append_json_string(out, v.s, ensure_ascii); check(); return;
      case Kind::Function:
        fail<InvalidArgument>("a function cannot be converted to JSON");
      case Kind::List: {
        const List& items = *v.list;
        out += '[';
        for (size_t k = 0; k < items.size(); ++k) {
          if (k > 0) out += item_sep;
          if (indent > 0) newline(depth + 1);
          write(items[k], depth + 1);
          check();
        }
        if (indent > 0 && !items.empty()) newline(depth);
        out += ']';
        return;
      }
      case Kind::Dict:
      case Kind::Namespace: {
        std::vector<const std::pair<std::string, Value>*> entries;
        entries.reserve(v.dict->items.size());
        for (const auto& e : v.dict->items) entries.push_back(&e);
        if (sort_keys) {
          std::stable_sort(entries.begin(), entries.end(),
                           [](auto* a, auto* b) { return locale_less(a->first, b->first); });
        }
        out += '{';
        for (size_t k = 0; k < entries.size(); ++k) {
          if (k > 0) out += item_sep;
          if (indent > 0) newline(depth + 1);
          append_json_string(out, entries[k]->first, ensure_ascii);
          out += key_sep;
          write(entries[k]->second, depth + 1);
          check();
        }
        if (indent > 0 && !entries.empty()) newline(depth);
        out += '}';
        return;
      }
    }
  }
};

}  // namespace

Value from_json(const nlohmann::json& j) { return from_json_at(j, 0); }
Value from_json(const nlohmann::ordered_json& j) { return from_json_at(j, 0); }
nlohmann::json to_json(const Value& v) { return to_json_at(v, 0); }

std::string js_number(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x == 0) return "0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  // sci: [-]d[.ddd]e(+|-)XX
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t epos = sci.find('e');
  std::string digits;
  for (size_t k = 0; k < epos; ++k) {
    if (sci[k] != '.') digits += sci[k];
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int exp10 = std::stoi(sci.substr(epos + 1));
  const int n = exp10 + 1;  // position of the decimal point
  const int k = static_cast<int>(digits.size());
  std::string out;
  if (k <= n && n <= 21) {
    out = digits + std::string(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out = digits.substr(0, static_cast<size_t>(n)) + "." + digits.substr(static_cast<size_t>(n));
  } else if (-6 < n && n <= 0) {
    out = "0." + std::string(static_cast<size_t>(-n), '0') + digits;
  } else {
    out = digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += "e";
    out += (n - 1 >= 0 ? "+" : "-");
    out += std::to_string(std::abs(n - 1));
  }
  return sign + out;
}

std::string float_display(double x) {
  if (x == 0 && std::signbit(x)) return "-0.0";
  if (std::isfinite(x) && x == std::floor(x)) {
    if (std::fabs(x) < 1e21) return fmt::format("{:.1f}", x);
    return js_number(x);
  }
  return js_number(x);
}

std::string to_json_text(const Value& v, int indent, bool sort_keys, bool ensure_ascii,
                         const std::string* item_sep, const std::string* key_sep) {
  JsonWriter w{indent > 0 ? indent : 0, sort_keys, ensure_ascii, true, "", "", 64u << 20, {}};
  w.item_sep = item_sep ? *item_sep : (indent > 0 ? "," : ", ");
  w.key_sep = key_sep ? *key_sep : ": ";
  w.write(v, 0);
  return std::move(w.out);
}

std::string to_display(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None: return "";
    case Kind::Bool: return v.b ? "true" : "false";
    case Kind::Int: return std::to_string(v.i);
    case Kind::Float: return float_display(v.f);
    case Kind::String: return v.s;
    case Kind::List:
    case Kind::Dict:
    case Kind::Namespace: {
      JsonWriter w{0, false, false, false, ", ", ": ", 64u << 20, {}};
      w.write(v, 0);
      return std::move(w.out);
    }
    case Kind::Function: return "<function>";
  }
  return "";
}

std::string concat_display(const Value& v) {
  switch (v.kind) {
    case Kind::Float: return js_number(v.f);
    default: return to_display(v);
  }
}

uint32_t utf8_decode(const std::string& s, size_t k, size_t* len) {
  const auto c0 = static_cast<unsigned char>(s[k]);
  auto cont = [&](size_t off) -> int {
    if (k + off >= s.size()) return -1;
    const auto c = static_cast<unsigned char>(s[k + off]);
    return (c & 0xC0) == 0x80 ? (c & 0x3F) : -1;
  };
  if (c0 < 0x80) {
    *len = 1;
    return c0;
  }
  if (c0 >= 0xC2 && c0 <= 0xDF) {
    const int a = cont(1);
    if (a >= 0) {
      *len = 2;
      return ((c0 & 0x1Fu) << 6) | static_cast<uint32_t>(a);
    }
  } else if (c0 >= 0xE0 && c0 <= 0xEF) {
    const int a = cont(1), b = cont(2);
    if (a >= 0 && b >= 0) {
      const uint32_t cp = ((c0 & 0x0Fu) << 12) | (static_cast<uint32_t>(a) << 6) | static_cast<uint32_t>(b);
      if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) {
        *len = 3;
        return cp;
      }
    }
  } else if (c0 >= 0xF0 && c0 <= 0xF4) {
    const int a = cont(1), b = cont(2), c = cont(3);
    if (a >= 0 && b >= 0 && c >= 0) {
      const uint32_t cp = ((c0 & 0x07u) << 18) | (static_cast<uint32_t>(a) << 12) |
                          (static_cast<uint32_t>(b) << 6) | static_cast<uint32_t>(c);
      if (cp >= 0x10000 && cp <= 0x10FFFF) {
        *len = 4;
        return cp;
      }
    }
  }
  *len = 1;
  return 0xFFFD;
}

void utf8_append(std::string& out, uint32_t cp) { utf8::append(out, cp); }

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (size_t k = 0; k < s.size();) {
    size_t len = 0;
    utf8_decode(s, k, &len);
    k += len;
    ++n;
  }
  return n;
}

std::vector<std::string> utf8_chars(const std::string& s) {
  // One std::string per character costs dozens of bytes each; strings this long are not split.
  constexpr size_t kMaxSplit = 1u << 20;
  if (s.size() > kMaxSplit) {
    fail<InvalidArgument>("a string of {} bytes is too long to split into characters (at most {})",
                          s.size(), kMaxSplit);
  }
  std::vector<std::string> out;
  for (size_t k = 0; k < s.size();) {
    size_t len = 0;
    utf8_decode(s, k, &len);
    out.push_back(s.substr(k, len));
    k += len;
  }
  return out;
}

}  // namespace sq::jinja
