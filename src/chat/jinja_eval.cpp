// The interpreter: statements, expressions, filters, tests, methods of strings, lists and dicts,
// and the global functions (range, namespace, raise_exception, strftime_now). Every loop, every
// recursion and every value it builds is counted against RenderLimits.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "base/error.h"
#include "chat/jinja.h"
#include "chat/jinja_util.h"

namespace sq::jinja {

struct Env {
  Env* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  explicit Env(Env* p) : parent(p) {}
  Value* find(std::string_view name) {
    for (Env* e = this; e != nullptr; e = e->parent) {
      for (auto& [k, v] : e->vars) {
        if (k == name) return &v;
      }
    }
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& [k, x] : vars) {
      if (k == name) {
        x = std::move(v);
        return;
      }
    }
    vars.emplace_back(name, std::move(v));
  }
};

namespace {

enum class Flow { Normal, Break, Continue };

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string ascii_upper(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  }
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return s;
}
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_alpha(c) || (c >= '0' && c <= '9'); }

std::string title_case(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    if (is_alpha(c)) {
      c = prev_cased ? static_cast<char>(std::tolower(static_cast<unsigned char>(c)))
                     : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      prev_cased = true;
    } else {
      prev_cased = (static_cast<unsigned char>(c) >= 0x80) && prev_cased;
    }
  }
  return out;
}

// Python's str.strip family: whitespace, or any of the characters of `chars`.
std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right) {
  size_t a = 0, b = s.size();
  if (chars == nullptr || chars->is_none() || chars->is_undefined()) {
    if (left) {
      while (a < b && is_ws(s[a])) ++a;
    }
    if (right) {
      while (b > a && is_ws(s[b - 1])) --b;
    }
    return s.substr(a, b - a);
  }
  std::vector<uint32_t> set;
  for (size_t k = 0; k < chars->s.size();) {
    size_t len = 0;
    set.push_back(utf8_decode(chars->s, k, &len));
    k += len;
  }
  auto in_set = [&](uint32_t cp) { return std::find(set.begin(), set.end(), cp) != set.end(); };
  if (left) {
    while (a < b) {
      size_t len = 0;
      if (!in_set(utf8_decode(s, a, &len))) break;
      a += len;
    }
  }
  if (right) {
    while (b > a) {
      size_t start = b - 1;  // back to the first byte of the last character
      while (start > a && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && b - start < 4) --start;
      size_t len = 0;
      const uint32_t cp = utf8_decode(s, start, &len);
      if (start + len != b) {  // not one well-formed character: take the last byte alone
        start = b - 1;
        if (!in_set(0xFFFD)) break;
      } else if (!in_set(cp)) {
        break;
      }
      b = start;
    }
  }
  return s.substr(a, b - a);
}

// JavaScript's parseInt / parseFloat on a string: the longest numeric prefix after whitespace.
bool parse_int_prefix(const std::string& s, int64_t* out) {
  size_t k = 0;
  while (k < s.size() && is_ws(s[k])) ++k;
  bool neg = false;
  if (k < s.size() && (s[k] == '+' || s[k] == '-')) neg = s[k++] == '-';
  const size_t start = k;
  int64_t v = 0;
  while (k < s.size() && s[k] >= '0' && s[k] <= '9') {
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[k] - '0', &v)) return false;
    ++k;
  }
  if (k == start) return false;
  *out = neg ? -v : v;
  return true;
}
bool parse_float_prefix(const std::string& s, double* out) {
  size_t k = 0;
  while (k < s.size() && is_ws(s[k])) ++k;
  const char* b = s.c_str() + k;
  char* e = nullptr;
  const double v = std::strtod(b, &e);
  if (e == b) return false;
  *out = v;
  return true;
}

const char* kMonths[] = {"January", "February", "March",     "April",   "May",      "June",
                         "July",    "August",   "September", "October", "November", "December"};
const char* kDays[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};

// Python's strftime for the directives templates use; others stay as written.
std::string strftime_fixed(const std::string& fmt, const std::tm& t) {
  std::string out;
  for (size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] != '%' || k + 1 >= fmt.size()) {
      out += fmt[k];
      continue;
    }
    bool no_pad = false;
    size_t p = k + 1;
    if (fmt[p] == '-' && p + 1 < fmt.size()) {
      no_pad = true;
      ++p;
    }
    auto num = [&](int v, int width) {
      return no_pad ? std::to_string(v) : fmt::format("{:0{}d}", v, width);
    };
    const int hour12 = t.tm_hour % 12 == 0 ? 12 : t.tm_hour % 12;
    std::string piece;
    switch (fmt[p]) {
      case 'Y': piece = std::to_string(t.tm_year + 1900); break;
      case 'y': piece = num((t.tm_year + 1900) % 100, 2); break;
      case 'm': piece = num(t.tm_mon + 1, 2); break;
      case 'd': piece = num(t.tm_mday, 2); break;
      case 'e': piece = fmt::format("{:>2}", t.tm_mday); break;
      case 'H': piece = num(t.tm_hour, 2); break;
      case 'I': piece = num(hour12, 2); break;
      case 'M': piece = num(t.tm_min, 2); break;
      case 'S': piece = num(t.tm_sec, 2); break;
      case 'j': piece = num(t.tm_yday + 1, 3); break;
      case 'p': piece = t.tm_hour < 12 ? "AM" : "PM"; break;
      case 'B': piece = kMonths[t.tm_mon]; break;
      case 'b':
      case 'h': piece = std::string(kMonths[t.tm_mon]).substr(0, 3); break;
      case 'A': piece = kDays[t.tm_wday]; break;
      case 'a': piece = std::string(kDays[t.tm_wday]).substr(0, 3); break;
      case '%': piece = "%"; break;
      default: piece = fmt.substr(k, p - k + 1);
    }
    out += piece;
    k = p;
  }
  return out;
}

}  // namespace

class Interpreter {
 public:
  Interpreter(const Program& program, const RenderInput& input)
      : program_(program), input_(input), limits_(input.limits) {}

  std::string run() {
    install_globals(root_);
    // The template may change what it is given (messages.append(...)); it works on its own copy,
    // made in this render's arena, so that the caller's values are neither changed nor emptied.
    for (const auto& [name, value] : input_.globals) root_.set(name, deep_copy(value));
    std::string out;
    exec_block(program_.body, root_, out);
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Errors and limits.

  [[noreturn]] void error(const std::string& what) const {
    auto [line, col] = source_line_col(program_.source, pos_);
    fail<InvalidArgument>("chat template error at line {}, column {}: {}", line, col, what);
  }

  void step() {
    if (++steps_ > limits_.max_steps) {
      error(fmt::format("the template ran more than {} steps", limits_.max_steps));
    }
  }

  struct DepthGuard {
    Interpreter& in;
    explicit DepthGuard(Interpreter& i) : in(i) {
      if (++in.depth_ > in.limits_.max_depth) {
        in.error(fmt::format("the template recursed deeper than {} levels", in.limits_.max_depth));
      }
    }
    ~DepthGuard() { --in.depth_; }
  };

  void check_string(size_t size) const {
    if (size > limits_.max_output) {
      error(fmt::format("a string grew past {} bytes", limits_.max_output));
    }
  }
  void check_items(size_t n) const {
    if (n > limits_.max_items) error(fmt::format("a list grew past {} items", limits_.max_items));
  }

  // Work proportional to the size of what an operation walks (a list's items, a string's bytes
  // in blocks of 64) counts as steps, so that a loop over a big value cannot run for hours within
  // the step limit.
  void charge(size_t units) {
    steps_ += static_cast<int64_t>(std::min<size_t>(units, static_cast<size_t>(limits_.max_steps)));
    if (steps_ > limits_.max_steps) {
      error(fmt::format("the template ran more than {} steps", limits_.max_steps));
    }
  }
  void charge(const Value& v) {
    switch (v.kind) {
      case Kind::String: charge(v.s.size() / 64); break;
      case Kind::List: charge(v.list->size()); break;
      case Kind::Dict:
      case Kind::Namespace: charge(v.dict->items.size()); break;
      default: break;
    }
  }

 private:
  const Program& program_;
  const RenderInput& input_;
  RenderLimits limits_;
  Env root_{nullptr};
  uint32_t pos_ = 0;
  int64_t steps_ = 0;
  int64_t iterations_ = 0;
  int depth_ = 0;

  // ---------------------------------------------------------------------------------------------
  // Statements.

  Flow exec_block(const Block& block, Env& env, std::string& out) {
    for (const StmtPtr& s : block) {
      const Flow f = exec(*s, env, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  void emit(std::string& out, const std::string& text) {
    out += text;
    if (out.size() > limits_.max_output) {
      error(fmt::format("the rendered text grew past {} bytes", limits_.max_output));
    }
  }

  Flow exec(const Stmt& s, Env& env, std::string& out) {
    step();
    DepthGuard guard(*this);
    pos_ = s.pos;
    switch (s.kind) {
      case StmtKind::Text:
        emit(out, s.text);
        return Flow::Normal;
      case StmtKind::Output: {
        const Value v = eval(*s.expr, env);
        if (!v.is_none() && !v.is_undefined()) emit(out, to_display(v));
        return Flow::Normal;
      }
      case StmtKind::If: {
        const bool test = eval(*s.expr, env).truthy();
        return exec_block(test ? s.body : s.else_body, env, out);
      }
      case StmtKind::For:
        exec_for(s, env, out);
        return Flow::Normal;
      case StmtKind::Set: {
        Value v = eval(*s.expr, env);
        pos_ = s.pos;
        assign(*s.target, std::move(v), env);
        return Flow::Normal;
      }
      case StmtKind::SetBlock: {
        std::string text;
        exec_block(s.body, env, text);
        pos_ = s.pos;
        assign(*s.target, Value::string(std::move(text)), env);
        return Flow::Normal;
      }
      case StmtKind::Macro: {
        const Stmt* macro = &s;
        env.set(s.text, Value::function([macro](const Args& args, Interpreter& in, Env& caller) {
          return in.call_macro(*macro, macro->params, macro->body, args, caller);
        }));
        return Flow::Normal;
      }
      case StmtKind::CallBlock: {
        const Stmt* block = &s;
        Env* defining = &env;
        // caller() refers to this block's scope, which ends with the statement: a template that
        // keeps the function (in a namespace) and calls it later gets an error, not a dangling
        // scope.
        auto alive = std::make_shared<bool>(true);
        struct Expire {
          std::shared_ptr<bool> flag;
          ~Expire() { *flag = false; }
        } expire{alive};
        Value caller = Value::function([block, defining, alive](const Args& args, Interpreter& in, Env&) {
          if (!*alive) in.error("caller() is called outside its {% call %} block");
          return in.call_macro(*block, block->params, block->body, args, *defining);
        });
        const Expr& call = *s.expr;
        Args args = eval_args(call.args, env);
        Value fn = eval(*call.kids[0], env);
        pos_ = s.pos;
        if (fn.kind != Kind::Function) error("{% call %} needs a macro, got " + describe(fn));
        Env scope(&env);
        scope.set("caller", std::move(caller));
        const Value r = (*fn.fn)(args, *this, scope);
        if (!r.is_none() && !r.is_undefined()) emit(out, to_display(r));
        return Flow::Normal;
      }
      case StmtKind::FilterBlock: {
        std::string text;
        exec_block(s.body, env, text);
        pos_ = s.pos;
        const Value r = apply_filter(Value::string(std::move(text)), *s.expr, env);
        if (!r.is_none() && !r.is_undefined()) emit(out, to_display(r));
        return Flow::Normal;
      }
      case StmtKind::Break: return Flow::Break;
      case StmtKind::Continue: return Flow::Continue;
      case StmtKind::Do:
        eval(*s.expr, env);
        return Flow::Normal;
    }
    return Flow::Normal;
  }

  void assign(const Expr& target, Value v, Env& env) {
    if (target.kind == ExprKind::Name) {
      env.set(target.name, std::move(v));
    } else if (target.kind == ExprKind::TupleLit) {
      if (v.kind != Kind::List) error("cannot unpack " + describe(v) + " into several names");
      if (v.list->size() != target.kids.size()) {
        error(fmt::format("cannot unpack {} values into {} names", v.list->size(),
                          target.kids.size()));
      }
      for (size_t k = 0; k < target.kids.size(); ++k) assign(*target.kids[k], (*v.list)[k], env);
    } else if (target.kind == ExprKind::Attr) {
      const Value obj = eval(*target.kids[0], env);
      if (obj.kind != Kind::Namespace) {
        error("cannot set attribute '" + target.name + "' of " + describe(obj) +
              ": only a namespace() can be assigned to");
      }
      obj.dict->set(target.name, std::move(v));
    } else {
      error("cannot assign to this expression");
    }
  }

  void bind_loop_var(const Expr& target, const Value& item, Env& scope) {
    if (target.kind == ExprKind::Name) {
      scope.set(target.name, item);
      return;
    }
    if (item.kind != Kind::List) error("cannot unpack " + describe(item) + " in a for loop");
    if (item.list->size() != target.kids.size()) {
      error(fmt::format("cannot unpack {} values into {} loop variables", item.list->size(),
                        target.kids.size()));
    }
    for (size_t k = 0; k < target.kids.size(); ++k) {
      bind_loop_var(*target.kids[k], (*item.list)[k], scope);
    }
  }

  void exec_for(const Stmt& s, Env& env, std::string& out) {
    Env scope(&env);
    const Value it = eval(*s.expr, scope);
    pos_ = s.pos;
    charge(it);
    List items;
    switch (it.kind) {
      case Kind::List: items = *it.list; break;
      case Kind::Dict:
        for (size_t k = 0; k < it.dict->items.size(); ++k) items.push_back(it.dict->key_at(k));
        break;
      case Kind::String:
        for (std::string& ch : utf8_chars(it.s)) items.push_back(Value::string(std::move(ch)));
        break;
      default:
        error("cannot loop over " + describe(it) +
              (s.expr->kind == ExprKind::Name ? " ('" + s.expr->name + "')" : std::string()));
    }
    if (s.loop_filter) {
      List kept;
      for (Value& item : items) {
        count_iteration();
        Env probe(&scope);
        bind_loop_var(*s.target, item, probe);
        if (eval(*s.loop_filter, probe).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      count_iteration();
      const auto idx = static_cast<size_t>(k);
      Dict loop;
      loop.items.reserve(10);
      loop.items.emplace_back("index", Value::integer(k + 1));
      loop.items.emplace_back("index0", Value::integer(k));
      loop.items.emplace_back("revindex", Value::integer(n - k));
      loop.items.emplace_back("revindex0", Value::integer(n - k - 1));
      loop.items.emplace_back("first", Value::boolean(k == 0));
      loop.items.emplace_back("last", Value::boolean(k == n - 1));
      loop.items.emplace_back("length", Value::integer(n));
      loop.items.emplace_back("previtem", k > 0 ? items[idx - 1] : Value());
      loop.items.emplace_back("nextitem", k < n - 1 ? items[idx + 1] : Value());
      loop.items.emplace_back(
          "cycle", Value::function([k](const Args& args, Interpreter& in, Env&) -> Value {
            if (args.positional.empty()) in.error("loop.cycle() needs at least one value");
            return args.positional[static_cast<size_t>(k) % args.positional.size()];
          }));
      scope.set("loop", Value::make_dict(std::move(loop)));
      bind_loop_var(*s.target, items[idx], scope);
      const Flow f = exec_block(s.body, scope, out);
      if (f == Flow::Break) break;
    }
    if (n == 0) exec_block(s.else_body, scope, out);
  }

  void count_iteration() {
    if (++iterations_ > limits_.max_loop_iterations) {
      error(fmt::format("the template ran more than {} loop iterations",
                        limits_.max_loop_iterations));
    }
  }

 public:
  Value call_macro(const Stmt& def, const std::vector<Param>& params, const Block& body,
                   const Args& args, Env& parent) {
    DepthGuard guard(*this);
    Env scope(&parent);
    std::vector<std::pair<std::string, Value>> kwargs = args.keywords;
    std::vector<const Param*> pending;
    for (size_t k = 0; k < params.size(); ++k) {
      const Param& p = params[k];
      Value v;
      bool given = false;
      if (k < args.positional.size()) {
        v = args.positional[k];
        given = true;
      } else {
        for (auto it = kwargs.begin(); it != kwargs.end(); ++it) {
          if (it->first == p.name) {
            v = std::move(it->second);
            kwargs.erase(it);
            given = true;
            break;
          }
        }
      }
      if (!given && p.default_value) pending.push_back(&p);
      scope.set(p.name, std::move(v));
    }
    List varargs;
    for (size_t k = params.size(); k < args.positional.size(); ++k) {
      varargs.push_back(args.positional[k]);
    }
    Dict kw;
    for (auto& [name, v] : kwargs) kw.items.emplace_back(name, std::move(v));
    scope.set("varargs", Value::make_list(std::move(varargs)));
    scope.set("kwargs", Value::make_dict(std::move(kw)));
    for (const Param* p : pending) scope.set(p->name, eval(*p->default_value, scope));
    const uint32_t saved = pos_;
    std::string text;
    pos_ = def.pos;
    exec_block(body, scope, text);
    pos_ = saved;
    return Value::string(std::move(text));
  }

  // ---------------------------------------------------------------------------------------------
  // Expressions.

  static std::string describe(const Value& v) {
    switch (v.kind) {
      case Kind::Undefined: return "an undefined value";
      case Kind::None: return "none";
      case Kind::String: {
        std::string s = v.s.size() > 40 ? v.s.substr(0, 40) + "..." : v.s;
        return "the string \"" + s + "\"";
      }
      case Kind::Int:
      case Kind::Float:
      case Kind::Bool: return std::string("the ") + v.type_name() + " " + to_display(v);
      default: return std::string("a ") + v.type_name();
    }
  }

  Args eval_args(const std::vector<CallArg>& args, Env& env) {
    Args out;
    for (const CallArg& a : args) {
      if (a.spread == 1) {
        const Value v = eval(*a.value, env);
        if (v.kind != Kind::List) error("cannot unpack " + describe(v) + " with *");
        for (const Value& x : *v.list) out.positional.push_back(x);
      } else if (a.spread == 0 && a.keyword.empty()) {
        out.positional.push_back(eval(*a.value, env));
      }
    }
    for (const CallArg& a : args) {
      if (a.spread == 2) {
        const Value v = eval(*a.value, env);
        if (v.kind != Kind::Dict) error("cannot unpack " + describe(v) + " with **");
        for (const auto& kv : v.dict->items) out.keywords.push_back(kv);
      } else if (!a.keyword.empty()) {
        if (out.keyword(a.keyword) != nullptr) {
          error("keyword argument '" + a.keyword + "' is given twice");
        }
        out.keywords.emplace_back(a.keyword, eval(*a.value, env));
      }
    }
    return out;
  }

  Value eval(const Expr& e, Env& env) {
    step();
    DepthGuard guard(*this);
    pos_ = e.pos;
    switch (e.kind) {
      case ExprKind::Literal: return e.literal;
      case ExprKind::Name: {
        if (const Value* v = env.find(e.name)) return *v;
        return Value();
      }
      case ExprKind::ListLit:
      case ExprKind::TupleLit: {
        List items;
        items.reserve(e.kids.size());
        for (const auto& k : e.kids) items.push_back(eval(*k, env));
        Value v = Value::make_list(std::move(items));
        v.tuple = e.kind == ExprKind::TupleLit;
        return v;
      }
      case ExprKind::DictLit: {
        Dict d;
        for (size_t k = 0; k + 1 < e.kids.size(); k += 2) {
          const Value key = eval(*e.kids[k], env);
          if (key.kind != Kind::String && key.kind != Kind::Int && key.kind != Kind::Float &&
              key.kind != Kind::Bool && key.kind != Kind::None) {
            pos_ = e.kids[k]->pos;
            error("dict keys must be strings or numbers, got " + describe(key));
          }
          d.set_key(key, eval(*e.kids[k + 1], env));
        }
        return Value::make_dict(std::move(d));
      }
      case ExprKind::Attr: {
        Value obj = eval(*e.kids[0], env);
        pos_ = e.pos;
        return member(obj, Value::string(e.name));
      }
      case ExprKind::Index: {
        Value obj = eval(*e.kids[0], env);
        Value key = eval(*e.kids[1], env);
        pos_ = e.pos;
        return member(obj, key);
      }
      case ExprKind::Slice: return eval_slice(e, env);
      case ExprKind::Call: {
        Args args = eval_args(e.args, env);
        const Value fn = eval(*e.kids[0], env);
        pos_ = e.pos;
        if (fn.kind != Kind::Function) {
          std::string what = e.kids[0]->kind == ExprKind::Name ? "'" + e.kids[0]->name + "'"
                             : e.kids[0]->kind == ExprKind::Attr ? "'." + e.kids[0]->name + "'"
                                                                 : "this";
          error("cannot call " + what + ": it is " + describe(fn) + ", not a function");
        }
        return (*fn.fn)(args, *this, env);
      }
      case ExprKind::Filter: {
        Value operand = eval(*e.kids[0], env);
        return apply_filter(std::move(operand), e, env);
      }
      case ExprKind::Test: {
        Value operand = eval(*e.kids[0], env);
        Args args = eval_args(e.args, env);
        pos_ = e.pos;
        const bool r = run_test(e.name, operand, args);
        return Value::boolean(e.negate ? !r : r);
      }
      case ExprKind::Neg:
      case ExprKind::Pos: {
        const Value v = eval(*e.kids[0], env);
        pos_ = e.pos;
        const int sign = e.kind == ExprKind::Neg ? -1 : 1;
        if (v.kind == Kind::Int) {
          if (sign < 0 && v.i == INT64_MIN) return Value::floating(-static_cast<double>(v.i));
          return Value::integer(sign * v.i);
        }
        if (v.kind == Kind::Bool) return Value::integer(sign * (v.b ? 1 : 0));
        if (v.kind == Kind::Float) return Value::floating(sign * v.f);
        error(std::string("unary ") + (sign < 0 ? "-" : "+") + " needs a number, got " + describe(v));
      }
      case ExprKind::Not: return Value::boolean(!eval(*e.kids[0], env).truthy());
      case ExprKind::And: {
        Value a = eval(*e.kids[0], env);
        if (!a.truthy()) return a;
        return eval(*e.kids[1], env);
      }
      case ExprKind::Or: {
        Value a = eval(*e.kids[0], env);
        if (a.truthy()) return a;
        return eval(*e.kids[1], env);
      }
      case ExprKind::Ternary:
        return eval(*e.kids[0], env).truthy() ? eval(*e.kids[1], env) : eval(*e.kids[2], env);
      case ExprKind::Select:
        return eval(*e.kids[0], env).truthy() ? eval(*e.kids[1], env) : Value();
      case ExprKind::Binary: {
        Value a = eval(*e.kids[0], env);
        Value b = eval(*e.kids[1], env);
        pos_ = e.pos;
        return binary(e.name, a, b);
      }
    }
    return Value();
  }

  // Python's slice indices over n items.
  static void slice_bounds(int64_t n, const Value& start, const Value& stop, int64_t step,
                           int64_t* a, int64_t* b) {
    if (step > 0) {
      *a = start.kind == Kind::Int ? (start.i < 0 ? std::max<int64_t>(n + start.i, 0)
                                                  : std::min(start.i, n))
                                   : 0;
      *b = stop.kind == Kind::Int ? (stop.i < 0 ? std::max<int64_t>(n + stop.i, 0)
                                               : std::min(stop.i, n))
                                  : n;
    } else {
      *a = start.kind == Kind::Int ? (start.i < 0 ? std::max<int64_t>(n + start.i, -1)
                                                  : std::min(start.i, n - 1))
                                   : n - 1;
      *b = stop.kind == Kind::Int ? (stop.i < 0 ? std::max<int64_t>(n + stop.i, -1)
                                               : std::min(stop.i, n - 1))
                                  : -1;
    }
  }

  Value eval_slice(const Expr& e, Env& env) {
    const Value obj = eval(*e.kids[0], env);
    Value parts[3];
    for (int k = 0; k < 3; ++k) {
      if (e.kids[static_cast<size_t>(k) + 1]) {
        parts[k] = eval(*e.kids[static_cast<size_t>(k) + 1], env);
      }
    }
    pos_ = e.pos;
    for (const Value& p : parts) {
      if (p.kind != Kind::Int && p.kind != Kind::Undefined && p.kind != Kind::None) {
        error("slice indices must be integers, got " + describe(p));
      }
    }
    const int64_t step = parts[2].kind == Kind::Int ? parts[2].i : 1;
    if (step == 0) error("slice step cannot be zero");
    charge(obj);
    if (obj.kind == Kind::List || obj.kind == Kind::String) {
      std::vector<std::string> chars;
      if (obj.kind == Kind::String) chars = utf8_chars(obj.s);
      const auto n = static_cast<int64_t>(obj.kind == Kind::List ? obj.list->size() : chars.size());
      int64_t a = 0, b = 0;
      slice_bounds(n, parts[0], parts[1], step, &a, &b);
      if (obj.kind == Kind::List) {
        List out;
        for (int64_t k = a; step > 0 ? k < b : k > b;) {
          out.push_back((*obj.list)[static_cast<size_t>(k)]);
          if (__builtin_add_overflow(k, step, &k)) break;
        }
        return Value::make_list(std::move(out));
      }
      std::string out;
      for (int64_t k = a; step > 0 ? k < b : k > b;) {
        out += chars[static_cast<size_t>(k)];
        if (__builtin_add_overflow(k, step, &k)) break;
      }
      return Value::string(std::move(out));
    }
    error("cannot slice " + describe(obj));
  }

  // ---------------------------------------------------------------------------------------------
  // Operators.

  // Each element compared is a step: equality of large nested lists is work a template pays for.
  bool loose_equal(const Value& a, const Value& b, int depth = 0) {
    step();
    if (depth > 128) return false;
    const bool an = a.is_none() || a.is_undefined();
    const bool bn = b.is_none() || b.is_undefined();
    if (an || bn) return an && bn;
    auto numeric = [](const Value& v) {
      return v.kind == Kind::Int || v.kind == Kind::Float || v.kind == Kind::Bool;
    };
    if (numeric(a) && numeric(b)) {
      if (a.kind == Kind::Int && b.kind == Kind::Int) return a.i == b.i;
      auto d = [](const Value& v) {
        return v.kind == Kind::Int ? static_cast<double>(v.i) : v.kind == Kind::Float ? v.f
                                                                                      : (v.b ? 1.0 : 0.0);
      };
      return d(a) == d(b);
    }
    if (a.kind != b.kind) return false;
    switch (a.kind) {
      case Kind::String: return a.s == b.s;
      case Kind::List: {
        if (a.list == b.list) return true;
        if (a.list->size() != b.list->size()) return false;
        for (size_t k = 0; k < a.list->size(); ++k) {
          if (!loose_equal((*a.list)[k], (*b.list)[k], depth + 1)) return false;
        }
        return true;
      }
      case Kind::Dict:
      case Kind::Namespace: {
        if (a.dict == b.dict) return true;
        if (a.dict->items.size() != b.dict->items.size()) return false;
        for (const auto& [k, v] : a.dict->items) {
          const Value* w = b.dict->find(k);
          if (w == nullptr || !loose_equal(v, *w, depth + 1)) return false;
        }
        return true;
      }
      case Kind::Function: return a.fn == b.fn;
      default: return false;
    }
  }

  // `in` on a list: the reference's strict equality (no number/boolean mixing).
  bool strict_member(const Value& x, const Value& list) {
    for (const Value& v : *list.list) {
      if (x.kind == Kind::Bool || v.kind == Kind::Bool) {
        if (x.kind == v.kind && x.b == v.b) return true;
        continue;
      }
      if (loose_equal(x, v)) return true;
    }
    return false;
  }

  // floor(x) as an integer; a float out of range or not a number is an error, not UB.
  int64_t float_to_int(double x) const {
    const double f = std::floor(x);
    if (!(f >= -9.2e18 && f <= 9.2e18)) error("the float " + js_number(x) + " has no integer value in range");
    return static_cast<int64_t>(f);
  }

  static double as_double(const Value& v) {
    return v.kind == Kind::Int ? static_cast<double>(v.i) : v.kind == Kind::Float ? v.f : (v.b ? 1.0 : 0.0);
  }

  Value binary(const std::string& op, const Value& a, const Value& b) {
    charge(a);
    charge(b);
    if (op == "==") return Value::boolean(loose_equal(a, b));
    if (op == "!=") return Value::boolean(!loose_equal(a, b));
    if (a.is_undefined() || b.is_undefined()) {
      if (b.is_undefined() && (op == "in" || op == "not in")) return Value::boolean(op == "not in");
      error("cannot apply '" + op + "' to " + describe(a) + " and " + describe(b));
    }
    if (a.is_none() || b.is_none()) {
      error("cannot apply '" + op + "' to " + describe(a) + " and " + describe(b));
    }
    if (op == "~") {
      std::string s = concat_display(a) + concat_display(b);
      check_string(s.size());
      return Value::string(std::move(s));
    }
    const bool an = a.kind == Kind::Int || a.kind == Kind::Float || a.kind == Kind::Bool;
    const bool bn = b.kind == Kind::Int || b.kind == Kind::Float || b.kind == Kind::Bool;
    if (an && bn) {
      const bool ints = a.kind != Kind::Float && b.kind != Kind::Float;
      const int64_t x = a.kind == Kind::Bool ? (a.b ? 1 : 0) : a.i;
      const int64_t y = b.kind == Kind::Bool ? (b.b ? 1 : 0) : b.i;
      const double dx = as_double(a), dy = as_double(b);
      if (op == "+" || op == "-" || op == "*") {
        if (ints) {
          int64_t r = 0;
          const bool overflow = op == "+" ? __builtin_add_overflow(x, y, &r)
                                : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                            : __builtin_mul_overflow(x, y, &r);
          if (!overflow) return Value::integer(r);
          return Value::floating(op == "+" ? dx + dy : op == "-" ? dx - dy : dx * dy);
        }
        return Value::floating(op == "+" ? dx + dy : op == "-" ? dx - dy : dx * dy);
      }
      if (op == "/") {
        if (dy == 0) error("division by zero");
        return Value::floating(dx / dy);
      }
      if (op == "//") {
        if (dy == 0) error("division by zero");
        if (ints) {
          if (x == INT64_MIN && y == -1) return Value::floating(-static_cast<double>(INT64_MIN));
          int64_t q = x / y;
          if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
          return Value::integer(q);
        }
        return Value::floating(std::floor(dx / dy));
      }
      if (op == "%") {
        if (dy == 0) error("modulo by zero");
        if (ints) {
          if (y == -1) return Value::integer(0);
          return Value::integer(x % y);  // JavaScript's sign rule, as the reference
        }
        return Value::floating(std::fmod(dx, dy));
      }
      if (op == "**") {
        if (dx == 0 && dy < 0) error("0 cannot be raised to a negative power");
        const double r = std::pow(dx, dy);
        if (!std::isfinite(r)) error("the power is not a finite real number");
        if (ints && y >= 0 && std::fabs(r) < 9.0e15) return Value::integer(static_cast<int64_t>(r));
        return Value::floating(r);
      }
      if (op == "<") return Value::boolean(dx < dy);
      if (op == ">") return Value::boolean(dx > dy);
      if (op == "<=") return Value::boolean(dx <= dy);
      if (op == ">=") return Value::boolean(dx >= dy);
    }
    if (a.kind == Kind::List && b.kind == Kind::List && op == "+") {
      check_items(a.list->size() + b.list->size());
      List out = *a.list;
      out.insert(out.end(), b.list->begin(), b.list->end());
      return Value::make_list(std::move(out));
    }
    if (b.kind == Kind::List && (op == "in" || op == "not in")) {
      const bool m = strict_member(a, b);
      return Value::boolean(op == "in" ? m : !m);
    }
    if ((a.kind == Kind::String || b.kind == Kind::String) && op == "+") {
      std::string s = concat_display(a) + concat_display(b);
      check_string(s.size());
      return Value::string(std::move(s));
    }
    if (a.kind == Kind::String && b.kind == Kind::String) {
      if (op == "in") return Value::boolean(b.s.find(a.s) != std::string::npos);
      if (op == "not in") return Value::boolean(b.s.find(a.s) == std::string::npos);
      // Python compares strings; the reference does not.
      if (op == "<") return Value::boolean(a.s < b.s);
      if (op == ">") return Value::boolean(a.s > b.s);
      if (op == "<=") return Value::boolean(a.s <= b.s);
      if (op == ">=") return Value::boolean(a.s >= b.s);
    }
    if (a.kind == Kind::String && (b.kind == Kind::Dict || b.kind == Kind::Namespace) &&
        (op == "in" || op == "not in")) {
      const bool m = b.dict->find(a.s) != nullptr;
      return Value::boolean(op == "in" ? m : !m);
    }
    if (op == "*" && ((a.kind == Kind::String && b.kind == Kind::Int) ||
                      (a.kind == Kind::Int && b.kind == Kind::String))) {
      const std::string& s = a.kind == Kind::String ? a.s : b.s;
      const int64_t n = a.kind == Kind::Int ? a.i : b.i;
      if (n <= 0 || s.empty()) return Value::string("");
      if (static_cast<uint64_t>(n) > limits_.max_output / s.size()) check_string(limits_.max_output + 1);
      std::string out;
      for (int64_t k = 0; k < n; ++k) out += s;
      return Value::string(std::move(out));
    }
    error("cannot apply '" + op + "' to " + describe(a) + " and " + describe(b));
  }

  // ---------------------------------------------------------------------------------------------
  // Attribute and item access, methods.

  Value member(const Value& obj, const Value& key) {
    if (obj.kind == Kind::String) charge(obj);
    switch (obj.kind) {
      case Kind::Dict:
      case Kind::Namespace: {
        if (key.kind != Kind::String) {
          if (obj.kind == Kind::Dict && key.kind != Kind::Dict && key.kind != Kind::List &&
              key.kind != Kind::Namespace && key.kind != Kind::Function) {
            // Only a literal with number keys has any: JSON object keys are strings.
            if (obj.dict->key_values.empty() || key.is_undefined()) return Value();
            const std::string text = to_display(key);
            for (size_t k = 0; k < obj.dict->items.size(); ++k) {
              if (obj.dict->items[k].first == text && obj.dict->key_values[k].kind == key.kind) {
                return obj.dict->items[k].second;
              }
            }
            return Value();
          }
          error("cannot look up " + describe(key) + " in a " + obj.type_name());
        }
        if (const Value* v = obj.dict->find(key.s)) return *v;
        if (obj.kind == Kind::Dict) return bound_method(obj, key.s);
        return Value();
      }
      case Kind::List: {
        if (key.kind == Kind::Int) {
          const auto n = static_cast<int64_t>(obj.list->size());
          const int64_t k = key.i < 0 ? n + key.i : key.i;
          if (k < 0 || k >= n) return Value();
          return (*obj.list)[static_cast<size_t>(k)];
        }
        if (key.kind == Kind::String) {
          if (key.s == "length") return Value::integer(static_cast<int64_t>(obj.list->size()));
          return bound_method(obj, key.s);
        }
        error("cannot index a list with " + describe(key));
      }
      case Kind::String: {
        if (key.kind == Kind::Int) {
          const auto n = static_cast<int64_t>(utf8_length(obj.s));
          const int64_t k = key.i < 0 ? n + key.i : key.i;
          if (k < 0 || k >= n) return Value();
          size_t pos = 0, len = 0;
          for (int64_t c = 0;; ++c) {
            utf8_decode(obj.s, pos, &len);
            if (c == k) break;
            pos += len;
          }
          return Value::string(obj.s.substr(pos, len));
        }
        if (key.kind == Kind::String) {
          if (key.s == "length") return Value::integer(static_cast<int64_t>(utf8_length(obj.s)));
          return bound_method(obj, key.s);
        }
        error("cannot index a string with " + describe(key));
      }
      default:
        if (key.kind != Kind::String && key.kind != Kind::Int) {
          error("cannot look up " + describe(key) + " in " + describe(obj));
        }
        return Value();  // the reference: an attribute of none or undefined is undefined
    }
  }

  static bool is_method(Kind kind, const std::string& name) {
    static const char* kString[] = {"upper", "lower", "strip", "lstrip", "rstrip", "title",
                                    "capitalize", "startswith", "endswith", "split", "rsplit",
                                    "replace", "find", "rfind", "count", "index", "format",
                                    "join", "splitlines", "isdigit", "isalpha", "isalnum",
                                    "isspace", "isupper", "islower", "swapcase", "zfill",
                                    "center", "ljust", "rjust", "partition", "removeprefix",
                                    "removesuffix", "encode"};
    static const char* kList[] = {"append", "pop", "insert", "extend", "index", "count",
                                  "copy", "reverse", "remove", "clear"};
    static const char* kDict[] = {"get", "items", "keys", "values", "dictsort", "update",
                                  "pop", "copy", "setdefault"};
    auto has = [&](const auto& table) {
      for (const char* n : table) {
        if (name == n) return true;
      }
      return false;
    };
    if (kind == Kind::String) return has(kString);
    if (kind == Kind::List) return has(kList);
    if (kind == Kind::Dict) return has(kDict);
    return false;
  }

  Value bound_method(const Value& obj, const std::string& name) {
    if (!is_method(obj.kind, name)) return Value();
    return Value::function([obj, name](const Args& args, Interpreter& in, Env&) {
      return in.call_method(obj, name, args);
    });
  }

  std::string arg_string(const Args& args, size_t k, std::string_view name, const char* method) {
    const Value* v = args.get(k, name);
    if (v == nullptr || v->kind != Kind::String) {
      error(fmt::format("{}() needs a string for argument {}, got {}", method, k + 1,
                        v ? describe(*v) : "nothing"));
    }
    return v->s;
  }

  Value call_method(const Value& obj, const std::string& name, const Args& args) {
    charge(obj);
    for (const Value& a : args.positional) charge(a);
    if (obj.kind == Kind::String) return string_method(obj.s, name, args);
    if (obj.kind == Kind::List) return list_method(obj, name, args);
    return dict_method(obj, name, args);
  }

  Value string_method(const std::string& s, const std::string& name, const Args& args) {
    if (name == "upper") return Value::string(ascii_upper(s));
    if (name == "lower") return Value::string(ascii_lower(s));
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value* chars = args.get(0, "chars");
      if (chars != nullptr && chars->kind != Kind::String && !chars->is_none()) {
        error(name + "() needs a string of characters, got " + describe(*chars));
      }
      return Value::string(strip_chars(s, chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "title") return Value::string(title_case(s));
    if (name == "capitalize") {
      std::string out = ascii_lower(s);
      if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
      return Value::string(out);
    }
    if (name == "swapcase") {
      std::string out = s;
      for (char& c : out) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
        else if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
      }
      return Value::string(out);
    }
    if (name == "startswith" || name == "endswith") {
      const Value* p = args.get(0, "prefix");
      if (p == nullptr) error(name + "() needs an argument");
      auto test = [&](const std::string& x) {
        if (x.size() > s.size()) return false;
        return name == "startswith" ? s.compare(0, x.size(), x) == 0
                                    : s.compare(s.size() - x.size(), x.size(), x) == 0;
      };
      if (p->kind == Kind::String) return Value::boolean(test(p->s));
      if (p->kind == Kind::List) {
        for (const Value& x : *p->list) {
          if (x.kind != Kind::String) error(name + "() needs strings, got " + describe(x));
          if (test(x.s)) return Value::boolean(true);
        }
        return Value::boolean(false);
      }
      error(name + "() needs a string or a tuple of strings, got " + describe(*p));
    }
    if (name == "split" || name == "rsplit") return split(s, args, name == "rsplit");
    if (name == "splitlines") {
      List out;
      size_t a = 0;
      for (size_t k = 0; k < s.size(); ++k) {
        if (s[k] == '\n' || s[k] == '\r') {
          out.push_back(Value::string(s.substr(a, k - a)));
          if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
          a = k + 1;
        }
      }
      if (a < s.size()) out.push_back(Value::string(s.substr(a)));
      return Value::make_list(std::move(out));
    }
    if (name == "replace") {
      const std::string from = arg_string(args, 0, "old", "replace");
      const std::string to = arg_string(args, 1, "new", "replace");
      int64_t count = -1;
      if (const Value* c = args.get(2, "count")) {
        if (c->kind == Kind::Int) count = c->i;
        else if (!c->is_none()) error("replace() count must be an integer, got " + describe(*c));
      }
      return Value::string(replace(s, from, to, count));
    }
    if (name == "find" || name == "rfind" || name == "index" || name == "count") {
      const std::string sub = arg_string(args, 0, "sub", name.c_str());
      if (name == "count") {
        if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
        int64_t n = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value::integer(n);
      }
      const size_t p = name == "rfind" ? s.rfind(sub) : s.find(sub);
      if (p == std::string::npos) {
        if (name == "index") error("index(): substring not found");
        return Value::integer(-1);
      }
      // Character index, as Python counts.
      return Value::integer(static_cast<int64_t>(utf8_length(s.substr(0, p))));
    }
    if (name == "join") {
      const Value* items = args.get(0, "iterable");
      if (items == nullptr || items->kind != Kind::List) {
        error("join() needs a list, got " + (items ? describe(*items) : std::string("nothing")));
      }
      std::string out;
      for (size_t k = 0; k < items->list->size(); ++k) {
        if (k) out += s;
        out += to_display((*items->list)[k]);
        check_string(out.size());
      }
      return Value::string(std::move(out));
    }
    if (name == "format") return Value::string(py_format(s, args));
    if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
        name == "isupper" || name == "islower") {
      if (s.empty()) return Value::boolean(false);
      bool cased = false;
      for (char c : s) {
        const bool ok = name == "isdigit"   ? (c >= '0' && c <= '9')
                        : name == "isalpha" ? is_alpha(c)
                        : name == "isalnum" ? is_alnum(c)
                        : name == "isspace" ? is_ws(c)
                        : name == "isupper" ? !(c >= 'a' && c <= 'z')
                                            : !(c >= 'A' && c <= 'Z');
        if (!ok) return Value::boolean(false);
        if (is_alpha(c)) cased = true;
      }
      if (name == "isupper" || name == "islower") return Value::boolean(cased);
      return Value::boolean(true);
    }
    if (name == "zfill" || name == "center" || name == "ljust" || name == "rjust") {
      const Value* w = args.get(0, "width");
      if (w == nullptr || w->kind != Kind::Int) error(name + "() needs an integer width");
      const auto len = static_cast<int64_t>(utf8_length(s));
      const int64_t width = std::min<int64_t>(w->i, static_cast<int64_t>(limits_.max_output));
      if (width <= len) return Value::string(s);
      const auto pad = static_cast<size_t>(width - len);
      std::string fill = " ";
      if (const Value* f = args.get(1, "fillchar"); f && f->kind == Kind::String) fill = f->s;
      auto rep = [&](size_t n) {
        std::string out;
        for (size_t k = 0; k < n; ++k) out += fill;
        return out;
      };
      if (name == "zfill") return Value::string(std::string(pad, '0') + s);
      if (name == "ljust") return Value::string(s + rep(pad));
      if (name == "rjust") return Value::string(rep(pad) + s);
      const size_t left = pad / 2;
      return Value::string(rep(left) + s + rep(pad - left));
    }
    if (name == "partition") {
      const std::string sep = arg_string(args, 0, "sep", "partition");
      const size_t p = sep.empty() ? std::string::npos : s.find(sep);
      Value v = p == std::string::npos
                    ? Value::make_list({Value::string(s), Value::string(""), Value::string("")})
                    : Value::make_list({Value::string(s.substr(0, p)), Value::string(sep),
                                        Value::string(s.substr(p + sep.size()))});
      v.tuple = true;
      return v;
    }
    if (name == "removeprefix" || name == "removesuffix") {
      const std::string x = arg_string(args, 0, "", name.c_str());
      if (name == "removeprefix" && s.compare(0, x.size(), x) == 0) return Value::string(s.substr(x.size()));
      if (name == "removesuffix" && x.size() <= s.size() &&
          s.compare(s.size() - x.size(), x.size(), x) == 0) {
        return Value::string(s.substr(0, s.size() - x.size()));
      }
      return Value::string(s);
    }
    if (name == "encode") return Value::string(s);
    error("strings have no method '" + name + "'");
  }

  Value split(const std::string& s, const Args& args, bool from_right) {
    const Value* sep = args.get(0, "sep");
    int64_t maxsplit = -1;
    if (const Value* m = args.get(1, "maxsplit")) {
      if (m->kind != Kind::Int) error("split() maxsplit must be an integer, got " + describe(*m));
      maxsplit = m->i;
    }
    std::vector<std::string> parts;
    if (sep == nullptr || sep->is_none()) {
      // Runs of whitespace separate; no empty strings at the ends.
      std::vector<std::pair<size_t, size_t>> words;
      for (size_t k = 0; k < s.size();) {
        while (k < s.size() && is_ws(s[k])) ++k;
        if (k >= s.size()) break;
        const size_t a = k;
        while (k < s.size() && !is_ws(s[k])) ++k;
        words.emplace_back(a, k);
      }
      if (maxsplit < 0 || static_cast<size_t>(maxsplit) >= words.size()) {
        for (auto [a, b] : words) parts.push_back(s.substr(a, b - a));
      } else if (!from_right) {
        for (size_t k = 0; k < static_cast<size_t>(maxsplit); ++k) {
          parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
        }
        size_t rest = words[static_cast<size_t>(maxsplit)].first;
        size_t end = s.size();
        while (end > rest && is_ws(s[end - 1])) --end;
        parts.push_back(s.substr(rest, end - rest));
      } else {
        const size_t keep = words.size() - static_cast<size_t>(maxsplit);
        size_t a = 0;
        while (a < s.size() && is_ws(s[a])) ++a;
        parts.push_back(s.substr(a, words[keep - 1].second - a));
        for (size_t k = keep; k < words.size(); ++k) {
          parts.push_back(s.substr(words[k].first, words[k].second - words[k].first));
        }
      }
    } else {
      if (sep->kind != Kind::String) error("split() separator must be a string, got " + describe(*sep));
      if (sep->s.empty()) error("split() separator is empty");
      const std::string& d = sep->s;
      std::vector<std::string> all;
      size_t a = 0;
      for (size_t p = s.find(d); p != std::string::npos; p = s.find(d, a)) {
        all.push_back(s.substr(a, p - a));
        a = p + d.size();
      }
      all.push_back(s.substr(a));
      if (maxsplit < 0 || static_cast<size_t>(maxsplit) + 1 >= all.size()) {
        parts = std::move(all);
      } else if (!from_right) {
        const auto m = static_cast<size_t>(maxsplit);
        parts.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(m));
        std::string rest;
        for (size_t k = m; k < all.size(); ++k) rest += (k > m ? d : "") + all[k];
        parts.push_back(rest);
      } else {
        const size_t keep = all.size() - static_cast<size_t>(maxsplit);
        std::string head;
        for (size_t k = 0; k < keep; ++k) head += (k ? d : "") + all[k];
        parts.push_back(head);
        for (size_t k = keep; k < all.size(); ++k) parts.push_back(all[k]);
      }
    }
    check_items(parts.size());
    List out;
    out.reserve(parts.size());
    for (auto& p : parts) out.push_back(Value::string(std::move(p)));
    return Value::make_list(std::move(out));
  }

  std::string replace(const std::string& s, const std::string& from, const std::string& to,
                      int64_t count) {
    std::string out;
    if (count == 0) return s;
    int64_t left = count < 0 ? INT64_MAX : count;
    if (from.empty()) {
      // Python inserts `to` before every character and at the end.
      for (const std::string& ch : utf8_chars(s)) {
        if (left > 0) {
          out += to;
          --left;
        }
        out += ch;
        check_string(out.size());
      }
      if (left > 0) out += to;
      return out;
    }
    size_t a = 0;
    for (size_t p = s.find(from); p != std::string::npos && left > 0; p = s.find(from, a)) {
      out.append(s, a, p - a);
      out += to;
      a = p + from.size();
      --left;
      check_string(out.size());
    }
    out.append(s, a, std::string::npos);
    check_string(out.size());
    return out;
  }

  // Python's str.format with {}, {0} and {name} fields (no format specifications).
  std::string py_format(const std::string& f, const Args& args) {
    std::string out;
    size_t auto_index = 0;
    for (size_t k = 0; k < f.size(); ++k) {
      const char c = f[k];
      if (c == '{' && k + 1 < f.size() && f[k + 1] == '{') {
        out += '{';
        ++k;
        continue;
      }
      if (c == '}' && k + 1 < f.size() && f[k + 1] == '}') {
        out += '}';
        ++k;
        continue;
      }
      if (c != '{') {
        out += c;
        continue;
      }
      const size_t close = f.find('}', k);
      if (close == std::string::npos) error("format(): '{' without '}'");
      const std::string field = f.substr(k + 1, close - k - 1);
      if (field.find(':') != std::string::npos || field.find('!') != std::string::npos) {
        error("format(): format specifications ('" + field + "') are not supported");
      }
      const Value* v = nullptr;
      if (field.empty()) {
        v = auto_index < args.positional.size() ? &args.positional[auto_index] : nullptr;
        ++auto_index;
      } else if (field.find_first_not_of("0123456789") == std::string::npos && field.size() < 6) {
        const size_t idx = std::stoul(field);
        v = idx < args.positional.size() ? &args.positional[idx] : nullptr;
      } else {
        v = args.keyword(field);
      }
      if (v == nullptr) error("format(): no argument for '{" + field + "}'");
      out += to_display(*v);
      check_string(out.size());
      k = close;
    }
    return out;
  }

  Value list_method(const Value& obj, const std::string& name, const Args& args) {
    List& l = *obj.list;
    if (name == "append") {
      const Value* v = args.get(0, "");
      if (v == nullptr) error("append() needs a value");
      check_items(l.size() + 1);
      l.push_back(*v);
      return Value::none();
    }
    if (name == "extend") {
      const Value* v = args.get(0, "");
      if (v == nullptr || v->kind != Kind::List) error("extend() needs a list");
      check_items(l.size() + v->list->size());
      const List copy = *v->list;
      l.insert(l.end(), copy.begin(), copy.end());
      return Value::none();
    }
    if (name == "insert") {
      const Value* i = args.get(0, "");
      const Value* v = args.get(1, "");
      if (i == nullptr || i->kind != Kind::Int || v == nullptr) error("insert() needs an index and a value");
      check_items(l.size() + 1);
      const auto n = static_cast<int64_t>(l.size());
      int64_t k = i->i < 0 ? std::max<int64_t>(n + i->i, 0) : std::min(i->i, n);
      l.insert(l.begin() + k, *v);
      return Value::none();
    }
    if (name == "pop") {
      if (l.empty()) error("pop() from an empty list");
      const auto n = static_cast<int64_t>(l.size());
      int64_t k = n - 1;
      if (const Value* i = args.get(0, "")) {
        if (i->kind != Kind::Int) error("pop() needs an integer index");
        k = i->i < 0 ? n + i->i : i->i;
        if (k < 0 || k >= n) error("pop() index out of range");
      }
      Value v = l[static_cast<size_t>(k)];
      l.erase(l.begin() + k);
      return v;
    }
    if (name == "index" || name == "count" || name == "remove") {
      const Value* v = args.get(0, "");
      if (v == nullptr) error(name + "() needs a value");
      int64_t count = 0;
      for (size_t k = 0; k < l.size(); ++k) {
        if (loose_equal(l[k], *v)) {
          if (name == "index") return Value::integer(static_cast<int64_t>(k));
          if (name == "remove") {
            l.erase(l.begin() + static_cast<std::ptrdiff_t>(k));
            return Value::none();
          }
          ++count;
        }
      }
      if (name == "count") return Value::integer(count);
      error(name + "(): value not in list");
    }
    if (name == "copy") return Value::make_list(l);
    if (name == "reverse") {
      std::reverse(l.begin(), l.end());
      return Value::none();
    }
    if (name == "clear") {
      l.clear();
      return Value::none();
    }
    error("lists have no method '" + name + "'");
  }

  Value items_of(const Dict& d) {
    List out;
    out.reserve(d.items.size());
    for (size_t k = 0; k < d.items.size(); ++k) {
      Value pair = Value::make_list({d.key_at(k), d.items[k].second});
      pair.tuple = true;
      out.push_back(std::move(pair));
    }
    return Value::make_list(std::move(out));
  }

  Value dict_method(const Value& obj, const std::string& name, const Args& args) {
    Dict& d = *obj.dict;
    if (name == "get") {
      const Value* key = args.get(0, "key");
      if (key == nullptr || key->kind != Kind::String) {
        error("get() needs a string key, got " + (key ? describe(*key) : std::string("nothing")));
      }
      if (const Value* v = d.find(key->s)) return *v;
      if (const Value* def = args.get(1, "default")) return *def;
      return Value::none();
    }
    if (name == "items") return items_of(d);
    if (name == "keys") {
      List out;
      for (size_t k = 0; k < d.items.size(); ++k) out.push_back(d.key_at(k));
      return Value::make_list(std::move(out));
    }
    if (name == "values") {
      List out;
      for (const auto& kv : d.items) out.push_back(kv.second);
      return Value::make_list(std::move(out));
    }
    if (name == "dictsort") return dictsort(obj, args);
    if (name == "copy") return Value::make_dict(d);
    if (name == "update") {
      if (const Value* other = args.get(0, ""); other && other->kind == Kind::Dict) {
        const Dict copy = *other->dict;
        for (size_t k = 0; k < copy.items.size(); ++k) d.set_key(copy.key_at(k), copy.items[k].second);
      }
      for (const auto& [k, v] : args.keywords) d.set(k, v);
      return Value::none();
    }
    if (name == "pop" || name == "setdefault") {
      const std::string key = arg_string(args, 0, "key", name.c_str());
      for (size_t k = 0; k < d.items.size(); ++k) {
        if (d.items[k].first == key) {
          Value v = d.items[k].second;
          if (name == "pop") d.erase(k);
          return v;
        }
      }
      const Value* def = args.get(1, "default");
      if (name == "setdefault") {
        d.set(key, def ? *def : Value::none());
        return def ? *def : Value::none();
      }
      if (def == nullptr) error("pop(): key '" + key + "' not found");
      return *def;
    }
    error("dicts have no method '" + name + "'");
  }

  // ---------------------------------------------------------------------------------------------
  // Sorting.

  int compare_values(const Value& a, const Value& b, bool case_sensitive) {
    const bool an = a.kind == Kind::Int || a.kind == Kind::Float || a.kind == Kind::Bool;
    const bool bn = b.kind == Kind::Int || b.kind == Kind::Float || b.kind == Kind::Bool;
    if (an && bn) {
      const double x = as_double(a), y = as_double(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    if ((a.is_none() && b.is_none()) || (a.is_undefined() && b.is_undefined())) return 0;
    if (a.kind == Kind::String && b.kind == Kind::String) {
      const std::string x = case_sensitive ? a.s : ascii_lower(a.s);
      const std::string y = case_sensitive ? b.s : ascii_lower(b.s);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    error("cannot compare " + describe(a) + " with " + describe(b));
  }

  static Value attribute_path(const Value& item, const std::string& path) {
    Value v = item;
    size_t a = 0;
    while (true) {
      const size_t dot = path.find('.', a);
      const std::string part = path.substr(a, dot == std::string::npos ? std::string::npos : dot - a);
      if (v.kind == Kind::Dict || v.kind == Kind::Namespace) {
        const Value* x = v.dict->find(part);
        if (x == nullptr) return Value();
        v = *x;
      } else if (v.kind == Kind::List && !part.empty() &&
                 part.find_first_not_of("0123456789") == std::string::npos && part.size() < 10) {
        const size_t k = std::stoul(part);
        if (k >= v.list->size()) return Value();
        v = (*v.list)[k];
      } else {
        return Value();
      }
      if (dot == std::string::npos) return v;
      a = dot + 1;
    }
  }

  template <typename Key>
  void sort_values(List& items, bool reverse, bool case_sensitive, Key key) {
    std::vector<size_t> order(items.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::vector<Value> keys;
    keys.reserve(items.size());
    for (const Value& v : items) keys.push_back(key(v));
    // Comparison errors are thrown from inside the sort; stable_sort copes with that.
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      const int c = compare_values(keys[x], keys[y], case_sensitive);
      return reverse ? c > 0 : c < 0;
    });
    List out;
    out.reserve(items.size());
    for (size_t k : order) out.push_back(items[k]);
    items = std::move(out);
  }

  Value dictsort(const Value& obj, const Args& args) {
    bool case_sensitive = false, reverse = false;
    std::string by = "key";
    if (const Value* v = args.get(0, "case_sensitive")) case_sensitive = v->truthy();
    if (const Value* v = args.get(1, "by")) {
      if (v->kind != Kind::String || (v->s != "key" && v->s != "value")) {
        error("dictsort() 'by' must be 'key' or 'value'");
      }
      by = v->s;
    }
    if (const Value* v = args.get(2, "reverse")) reverse = v->truthy();
    Value items = items_of(*obj.dict);
    const size_t idx = by == "key" ? 0 : 1;
    sort_values(*items.list, reverse, case_sensitive,
                [idx](const Value& pair) { return (*pair.list)[idx]; });
    return items;
  }

  // ---------------------------------------------------------------------------------------------
  // Tests.

  bool run_test(const std::string& name, const Value& v, const Args& args) {
    auto arg = [&](size_t k) -> const Value& {
      if (k >= args.positional.size()) error("test '" + name + "' needs an argument");
      return args.positional[k];
    };
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.kind == Kind::Bool;
    if (name == "true") return v.kind == Kind::Bool && v.b;
    if (name == "false") return v.kind == Kind::Bool && !v.b;
    if (name == "string") return v.kind == Kind::String;
    if (name == "number") return v.kind == Kind::Int || v.kind == Kind::Float;
    if (name == "integer") return v.kind == Kind::Int;
    if (name == "float") return v.kind == Kind::Float;
    if (name == "mapping") return v.kind == Kind::Dict;
    if (name == "iterable") return v.kind == Kind::List || v.kind == Kind::String || v.kind == Kind::Dict;
    if (name == "sequence") return v.kind == Kind::List || v.kind == Kind::String || v.kind == Kind::Dict;
    if (name == "callable") return v.kind == Kind::Function;
    if (name == "odd" || name == "even") {
      if (v.kind != Kind::Int) error("test '" + name + "' needs an integer, got " + describe(v));
      return (v.i % 2 != 0) == (name == "odd");
    }
    if (name == "divisibleby") {
      const Value& d = arg(0);
      if (v.kind != Kind::Int || d.kind != Kind::Int || d.i == 0) {
        error("test 'divisibleby' needs non-zero integers");
      }
      return d.i == -1 || v.i % d.i == 0;
    }
    if (name == "lower") return v.kind == Kind::String && ascii_lower(v.s) == v.s;
    if (name == "upper") return v.kind == Kind::String && ascii_upper(v.s) == v.s;
    if (name == "equalto" || name == "eq" || name == "sameas") return loose_equal(v, arg(0));
    if (name == "ne") return !loose_equal(v, arg(0));
    if (name == "lt" || name == "gt" || name == "le" || name == "ge") {
      static const char* ops[][2] = {{"lt", "<"}, {"gt", ">"}, {"le", "<="}, {"ge", ">="}};
      for (auto& o : ops) {
        if (name == o[0]) return binary(o[1], v, arg(0)).truthy();
      }
    }
    if (name == "in") return binary("in", v, arg(0)).truthy();
    if (name == "escaped") return false;
    error("unknown test '" + name + "'");
  }

  // ---------------------------------------------------------------------------------------------
  // Filters.

  Value apply_filter(Value operand, const Expr& f, Env& env) {
    Args args = eval_args(f.args, env);
    pos_ = f.pos;
    return filter(f.name, operand, args, f.has_args, env);
  }

  static bool int_arg(const Args& args, size_t k, std::string_view name, int64_t* out) {
    const Value* v = args.get(k, name);
    if (v == nullptr || v->is_none()) return false;
    if (v->kind == Kind::Int) {
      *out = v->i;
      return true;
    }
    if (v->kind == Kind::Bool) {
      *out = v->b;
      return true;
    }
    return false;
  }
  static bool bool_arg(const Args& args, size_t k, std::string_view name, bool def) {
    const Value* v = args.get(k, name);
    return v == nullptr ? def : v->truthy();
  }

  [[noreturn]] void bad_operand(const std::string& name, const Value& v) {
    error("filter '" + name + "' cannot be applied to " + describe(v));
  }

  Value filter(const std::string& name, const Value& v, const Args& args, bool has_args, Env& env) {
    charge(v);
    if (name == "safe") return v;
    if (name == "tojson") {
      int64_t indent = -1;
      if (const Value* i = args.get(0, "indent"); i && !i->is_none()) {
        if (i->kind != Kind::Int) error("tojson() indent must be an integer, got " + describe(*i));
        indent = std::min<int64_t>(i->i, 64);
      }
      const bool ensure_ascii = bool_arg(args, 99, "ensure_ascii", false);
      const bool sort_keys = bool_arg(args, 99, "sort_keys", false);
      std::string item_sep, key_sep;
      bool seps = false;
      if (const Value* s = args.keyword("separators"); s && !s->is_none()) {
        if (s->kind != Kind::List || s->list->size() != 2 || (*s->list)[0].kind != Kind::String ||
            (*s->list)[1].kind != Kind::String) {
          error("tojson() separators must be two strings");
        }
        item_sep = (*s->list)[0].s;
        key_sep = (*s->list)[1].s;
        seps = true;
      }
      std::string out = to_json_text(v, static_cast<int>(indent), sort_keys, ensure_ascii,
                                     seps ? &item_sep : nullptr, seps ? &key_sep : nullptr);
      check_string(out.size());
      return Value::string(std::move(out));
    }
    if (name == "default" || name == "d") {
      const Value* def = args.get(0, "default_value");
      const bool boolean = bool_arg(args, 1, "boolean", false);
      if (v.is_undefined() || (boolean && !v.truthy())) return def ? *def : Value::string("");
      return v;
    }
    if (name == "from_json") {
      if (v.kind != Kind::String) bad_operand(name, v);
      try {
        return from_json(nlohmann::json::parse(v.s));
      } catch (const nlohmann::json::exception&) {
        error("from_json: the string is not JSON");
      }
    }
    if (v.is_undefined() || v.is_none()) bad_operand(name, v);

    if (name == "length" || name == "count") {
      switch (v.kind) {
        case Kind::String: return Value::integer(static_cast<int64_t>(utf8_length(v.s)));
        case Kind::List: return Value::integer(static_cast<int64_t>(v.list->size()));
        case Kind::Dict: return Value::integer(static_cast<int64_t>(v.dict->items.size()));
        default: bad_operand(name, v);
      }
    }
    if (name == "string") return Value::string(to_display(v));
    if (name == "list") {
      if (v.kind == Kind::List) return v;
      if (v.kind == Kind::String) {
        List out;
        for (std::string& c : utf8_chars(v.s)) out.push_back(Value::string(std::move(c)));
        return Value::make_list(std::move(out));
      }
      if (v.kind == Kind::Dict) return dict_method(v, "keys", Args{});
      bad_operand(name, v);
    }
    if (name == "first" || name == "last") {
      if (v.kind == Kind::List) {
        if (v.list->empty()) return Value();
        return name == "first" ? v.list->front() : v.list->back();
      }
      if (v.kind == Kind::String) {
        std::vector<std::string> cs = utf8_chars(v.s);
        if (cs.empty()) return Value();
        return Value::string(name == "first" ? cs.front() : cs.back());
      }
      bad_operand(name, v);
    }
    if (name == "reverse") {
      if (v.kind == Kind::List) {
        List out(v.list->rbegin(), v.list->rend());
        return Value::make_list(std::move(out));
      }
      if (v.kind == Kind::String) {
        std::vector<std::string> cs = utf8_chars(v.s);
        std::string out;
        for (auto it = cs.rbegin(); it != cs.rend(); ++it) out += *it;
        return Value::string(std::move(out));
      }
      bad_operand(name, v);
    }
    if (name == "join") {
      std::string sep;
      if (const Value* s = args.get(0, "d")) {
        if (s->kind != Kind::String) error("join() separator must be a string");
        sep = s->s;
      }
      const Value* attr = args.keyword("attribute");
      List items;
      if (v.kind == Kind::List) {
        items = *v.list;
      } else if (v.kind == Kind::String) {
        for (std::string& c : utf8_chars(v.s)) items.push_back(Value::string(std::move(c)));
      } else {
        bad_operand(name, v);
      }
      std::string out;
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += sep;
        out += to_display(attr ? attribute_path(items[k], to_display(*attr)) : items[k]);
        check_string(out.size());
      }
      return Value::string(std::move(out));
    }
    if (name == "unique") {
      if (v.kind != Kind::List) bad_operand(name, v);
      List out;
      for (const Value& x : *v.list) {
        bool seen = false;
        for (const Value& y : out) {
          step();
          if (x.kind == y.kind && loose_equal(x, y) &&
              (x.kind != Kind::List && x.kind != Kind::Dict ? true : x.list == y.list && x.dict == y.dict)) {
            seen = true;
            break;
          }
        }
        if (!seen) out.push_back(x);
      }
      return Value::make_list(std::move(out));
    }
    if (name == "sort") {
      if (v.kind != Kind::List) bad_operand(name, v);
      const bool reverse = bool_arg(args, 0, "reverse", false);
      const bool case_sensitive = bool_arg(args, 1, "case_sensitive", false);
      const Value* attr = args.get(2, "attribute");
      List items = *v.list;
      if (attr && !attr->is_none()) {
        const std::string path = to_display(*attr);
        sort_values(items, reverse, case_sensitive,
                    [&](const Value& x) { return attribute_path(x, path); });
      } else {
        sort_values(items, reverse, case_sensitive, [](const Value& x) { return x; });
      }
      return Value::make_list(std::move(items));
    }
    if (name == "min" || name == "max" || name == "sum") {
      if (v.kind != Kind::List) bad_operand(name, v);
      const Value* attr = args.keyword("attribute");
      auto key = [&](const Value& x) { return attr ? attribute_path(x, to_display(*attr)) : x; };
      if (name == "sum") {
        Value total = Value::integer(0);
        if (const Value* s = args.keyword("start")) total = *s;
        for (const Value& x : *v.list) total = binary("+", total, key(x));
        return total;
      }
      if (v.list->empty()) return Value();
      const bool case_sensitive = bool_arg(args, 0, "case_sensitive", false);
      Value best = (*v.list)[0];
      for (const Value& x : *v.list) {
        const int c = compare_values(key(x), key(best), case_sensitive);
        if (name == "min" ? c < 0 : c > 0) best = x;
      }
      return best;
    }
    if (name == "map") return map_filter(v, args, env);
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      return select_filter(name, v, args);
    }
    if (name == "items") {
      if (v.kind != Kind::Dict) bad_operand(name, v);
      return items_of(*v.dict);
    }
    if (name == "dictsort") {
      if (v.kind != Kind::Dict) bad_operand(name, v);
      return dictsort(v, args);
    }
    if (name == "batch") {
      if (v.kind != Kind::List) bad_operand(name, v);
      int64_t n = 0;
      if (!int_arg(args, 0, "linecount", &n) || n <= 0) error("batch() needs a positive size");
      const Value* fill = args.get(1, "fill_with");
      List out;
      for (size_t k = 0; k < v.list->size(); k += static_cast<size_t>(n)) {
        List row;
        for (size_t j = k; j < std::min(v.list->size(), k + static_cast<size_t>(n)); ++j) {
          row.push_back((*v.list)[j]);
        }
        while (fill && row.size() < static_cast<size_t>(n)) row.push_back(*fill);
        out.push_back(Value::make_list(std::move(row)));
      }
      return Value::make_list(std::move(out));
    }
    if (name == "attr") {
      const Value* a = args.get(0, "name");
      if (a == nullptr) error("attr() needs a name");
      return member(v, *a);
    }
    if (name == "int") {
      switch (v.kind) {
        case Kind::Int: return v;
        case Kind::Float: return Value::integer(float_to_int(v.f));
        case Kind::Bool: return Value::integer(v.b ? 1 : 0);
        case Kind::String: {
          int64_t x = 0;
          if (parse_int_prefix(v.s, &x)) return Value::integer(x);
          if (const Value* d = args.get(0, "default")) return *d;
          return Value::integer(0);
        }
        default: bad_operand(name, v);
      }
    }
    if (name == "float") {
      switch (v.kind) {
        case Kind::Int: return Value::floating(static_cast<double>(v.i));
        case Kind::Float: return v;
        case Kind::Bool: return Value::floating(v.b ? 1.0 : 0.0);
        case Kind::String: {
          double x = 0;
          if (parse_float_prefix(v.s, &x)) return Value::floating(x);
          if (const Value* d = args.get(0, "default")) return *d;
          return Value::floating(0.0);
        }
        default: bad_operand(name, v);
      }
    }
    if (name == "bool") return Value::boolean(v.truthy());
    if (name == "abs") {
      if (v.kind == Kind::Int) {
        if (v.i == INT64_MIN) return Value::floating(-static_cast<double>(v.i));
        return Value::integer(v.i < 0 ? -v.i : v.i);
      }
      if (v.kind == Kind::Float) return Value::floating(std::fabs(v.f));
      bad_operand(name, v);
    }
    if (name == "round") {
      if (!v.is_number()) bad_operand(name, v);
      int64_t precision = 0;
      int_arg(args, 0, "precision", &precision);
      precision = std::clamp<int64_t>(precision, -20, 20);
      std::string method = "common";
      if (const Value* m = args.get(1, "method"); m && m->kind == Kind::String) method = m->s;
      const double scale = std::pow(10.0, static_cast<double>(precision));
      const double x = as_double(v) * scale;
      const double r = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::round(x);
      return Value::floating(r / scale);
    }
    if (v.kind == Kind::String || name == "upper" || name == "lower" || name == "trim") {
      if (v.kind != Kind::String) bad_operand(name, v);
      const std::string& s = v.s;
      if (name == "upper") return Value::string(ascii_upper(s));
      if (name == "lower") return Value::string(ascii_lower(s));
      if (name == "title") return Value::string(title_case(s));
      if (name == "capitalize") return string_method(s, "capitalize", Args{});
      if (name == "trim") return Value::string(strip_chars(s, args.get(0, "chars"), true, true));
      if (name == "replace") {
        Args a = args;
        return string_method(s, "replace", a);
      }
      if (name == "indent") return indent(s, args);
      if (name == "wordcount") {
        int64_t n = 0;
        bool in_word = false;
        for (char c : s) {
          const bool w = is_alnum(c) || c == '_' || static_cast<unsigned char>(c) >= 0x80;
          if (w && !in_word) ++n;
          in_word = w;
        }
        return Value::integer(n);
      }
      if (name == "escape" || name == "e" || name == "forceescape") {
        std::string out;
        for (char c : s) {
          switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&#34;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
          }
        }
        check_string(out.size());
        return Value::string(std::move(out));
      }
      if (name == "center") return string_method(s, "center", args);
      if (name == "truncate") {
        int64_t length = 255;
        int_arg(args, 0, "length", &length);
        std::vector<std::string> cs = utf8_chars(s);
        if (static_cast<int64_t>(cs.size()) <= length) return v;
        std::string end = "...";
        if (const Value* e = args.get(2, "end"); e && e->kind == Kind::String) end = e->s;
        std::string out;
        const int64_t keep = std::max<int64_t>(0, length - static_cast<int64_t>(end.size()));
        for (int64_t k = 0; k < keep; ++k) out += cs[static_cast<size_t>(k)];
        return Value::string(out + end);
      }
      if (name == "striptags") return v;
      if (name == "format") {
        Args a = args;
        return Value::string(py_format_percent(s, a));
      }
    }
    (void)has_args;
    error("unknown filter '" + name + "' for " + describe(v));
  }

  // "%s and %d" % args: the printf-style format filter, %s/%d/%i/%f/%% only.
  std::string py_format_percent(const std::string& f, const Args& args) {
    std::string out;
    size_t next = 0;
    for (size_t k = 0; k < f.size(); ++k) {
      if (f[k] != '%' || k + 1 >= f.size()) {
        out += f[k];
        continue;
      }
      const char c = f[++k];
      if (c == '%') {
        out += '%';
        continue;
      }
      if (next >= args.positional.size()) error("format: not enough arguments");
      const Value& a = args.positional[next++];
      if (c == 'd' || c == 'i') out += a.is_number() ? std::to_string(float_to_int(as_double(a))) : to_display(a);
      else if (c == 'f') out += fmt::format("{:.6f}", as_double(a));
      else out += to_display(a);
    }
    return out;
  }

  Value indent(const std::string& s, const Args& args) {
    std::string pad = "    ";
    if (const Value* w = args.get(0, "width")) {
      if (w->kind == Kind::Int) pad = std::string(static_cast<size_t>(std::clamp<int64_t>(w->i, 0, 256)), ' ');
      else if (w->kind == Kind::String) pad = w->s;
      else error("indent() width must be a number or a string");
    }
    const bool first = bool_arg(args, 1, "first", false);
    const bool blank = bool_arg(args, 2, "blank", false);
    std::string out;
    size_t a = 0;
    bool is_first = true;
    while (true) {
      const size_t nl = s.find('\n', a);
      const std::string line = s.substr(a, nl == std::string::npos ? std::string::npos : nl - a);
      if ((is_first && !first) || (!blank && line.empty())) {
        out += line;
      } else {
        out += pad + line;
      }
      check_string(out.size());
      is_first = false;
      if (nl == std::string::npos) break;
      out += '\n';
      a = nl + 1;
    }
    return Value::string(std::move(out));
  }

  Value map_filter(const Value& v, const Args& args, Env& env) {
    if (v.kind != Kind::List) bad_operand("map", v);
    List out;
    if (const Value* attr = args.keyword("attribute")) {
      const std::string path = to_display(*attr);
      const Value* def = args.keyword("default");
      for (const Value& x : *v.list) {
        Value r = attribute_path(x, path);
        out.push_back(r.is_undefined() && def ? *def : r);
      }
      return Value::make_list(std::move(out));
    }
    if (args.positional.empty() || args.positional[0].kind != Kind::String) {
      error("map() needs attribute= or a filter name");
    }
    const std::string fname = args.positional[0].s;
    Args rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    rest.keywords = args.keywords;
    for (const Value& x : *v.list) out.push_back(filter(fname, x, rest, true, env));
    return Value::make_list(std::move(out));
  }

  Value select_filter(const std::string& name, const Value& v, const Args& args) {
    if (v.kind != Kind::List) bad_operand(name, v);
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool select = name == "select" || name == "selectattr";
    size_t k = 0;
    std::string attr;
    if (by_attr) {
      if (args.positional.empty() || args.positional[0].kind != Kind::String) {
        error(name + "() needs an attribute name");
      }
      attr = args.positional[0].s;
      k = 1;
    }
    std::string test;
    if (k < args.positional.size()) {
      if (args.positional[k].kind != Kind::String) error(name + "() needs a test name");
      test = args.positional[k].s;
    }
    Args test_args;
    if (k + 1 < args.positional.size()) {
      test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(k) + 1,
                                  args.positional.end());
    }
    List out;
    for (const Value& x : *v.list) {
      bool r = false;
      if (by_attr) {
        const Value a = attribute_path(x, attr);
        // The reference: an item without the attribute never passes the test.
        if (!a.is_undefined()) r = test.empty() ? a.truthy() : run_test(test, a, test_args);
      } else {
        r = test.empty() ? x.truthy() : run_test(test, x, test_args);
      }
      if (r == select) out.push_back(x);
    }
    return Value::make_list(std::move(out));
  }

  // ---------------------------------------------------------------------------------------------
  // Globals.

  void install_globals(Env& root) {
    root.set("true", Value::boolean(true));
    root.set("false", Value::boolean(false));
    root.set("none", Value::none());
    root.set("True", Value::boolean(true));
    root.set("False", Value::boolean(false));
    root.set("None", Value::none());
    root.set("raise_exception", Value::function([](const Args& args, Interpreter&, Env&) -> Value {
      std::string msg = args.positional.empty() ? std::string("raise_exception() was called")
                                                : to_display(args.positional[0]);
      throw InvalidArgument(msg);
    }));
    root.set("range", Value::function([](const Args& args, Interpreter& in, Env&) {
      int64_t start = 0, stop = 0, step = 1;
      std::vector<int64_t> v;
      for (const Value& a : args.positional) {
        if (a.kind != Kind::Int) in.error("range() needs integers, got " + describe(a));
        v.push_back(a.i);
      }
      if (v.size() == 1) {
        stop = v[0];
      } else if (v.size() == 2 || v.size() == 3) {
        start = v[0];
        stop = v[1];
        if (v.size() == 3) step = v[2];
      } else {
        in.error("range() takes one to three integers");
      }
      if (step == 0) in.error("range() step must not be zero");
      List out;
      for (int64_t k = start; step > 0 ? k < stop : k > stop;) {
        in.check_items(out.size() + 1);
        out.push_back(Value::integer(k));
        if (__builtin_add_overflow(k, step, &k)) break;
      }
      return Value::make_list(std::move(out));
    }));
    root.set("namespace", Value::function([](const Args& args, Interpreter& in, Env&) {
      Dict d;
      if (!args.positional.empty()) {
        const Value& src = args.positional[0];
        if (src.kind == Kind::Dict) {
          d = *src.dict;
        } else if (src.kind == Kind::List) {
          for (const Value& pair : *src.list) {
            if (pair.kind != Kind::List || pair.list->size() != 2 ||
                (*pair.list)[0].kind != Kind::String) {
              in.error("namespace() needs [key, value] pairs");
            }
            d.set((*pair.list)[0].s, (*pair.list)[1]);
          }
        } else {
          in.error("namespace() needs a dict, got " + describe(src));
        }
      }
      for (const auto& [k, v] : args.keywords) d.set(k, v);
      return Value::make_namespace(std::move(d));
    }));
    root.set("dict", Value::function([](const Args& args, Interpreter&, Env&) {
      Dict d;
      if (!args.positional.empty() && args.positional[0].kind == Kind::Dict) d = *args.positional[0].dict;
      for (const auto& [k, v] : args.keywords) d.set(k, v);
      return Value::make_dict(std::move(d));
    }));
    const int* date = input_.date;
    std::tm t{};
    if (date[0] == 0) {
      const std::time_t now = std::time(nullptr);
      localtime_r(&now, &t);
    } else {
      t.tm_year = date[0] - 1900;
      t.tm_mon = date[1] - 1;
      t.tm_mday = date[2];
      t.tm_hour = date[3];
      t.tm_min = date[4];
      t.tm_sec = date[5];
      t.tm_isdst = 0;
      std::tm copy = t;
      timegm(&copy);  // fills in the weekday and day of the year
      t.tm_wday = copy.tm_wday;
      t.tm_yday = copy.tm_yday;
    }
    root.set("strftime_now", Value::function([t](const Args& args, Interpreter& in, Env&) {
      if (args.positional.empty() || args.positional[0].kind != Kind::String) {
        in.error("strftime_now() needs a format string");
      }
      return Value::string(strftime_fixed(args.positional[0].s, t));
    }));
  }
};

std::string render(const Program& program, const RenderInput& input) {
  // The arena outlives the interpreter, so every container the render made is emptied (and any
  // cycle broken) whether it ends normally or by an error.
  ContainerArena arena;
  Interpreter in(program, input);
  return in.run();
}

}  // namespace sq::jinja
