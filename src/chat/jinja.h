// The Jinja subset that chat templates use: values, the syntax tree, the parser and the
// interpreter. Internal to src/chat; the public face is ChatTemplate (template.h).
//
// Semantics follow @huggingface/jinja (the renderer transformers.js and most JavaScript clients
// use, and the reference the conformance test holds squeeze to) wherever it defines them: how
// values print (true/false, lists and dicts as JSON), lstrip_blocks and trim_blocks on, `tojson`
// with ", " separators and no ASCII escaping. Where it lacks a feature Python's Jinja has (string
// .format, list.append, tests with arguments, more filters), squeeze follows Python's Jinja.
//
// Templates come from model files, so everything here is bounded: parser nesting, evaluation
// depth, loop iterations, evaluation steps, and the size of every string and list built. Errors
// are FormatError (syntax, with line and column) or InvalidArgument (at run time, with line and
// column), never a crash.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace sq::jinja {

struct Value;
class Interpreter;
struct Env;

using List = std::vector<Value>;

// A mapping with the insertion order of its keys (JSON objects, dict literals, namespaces).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  // The keys as written when some are not strings (a literal {0: 'a', 512: 'b'}), aligned with
  // `items`, whose keys are then their printed form; empty otherwise (JSON objects, namespaces).
  std::vector<Value> key_values;

  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(const std::string& key, Value value);
  void set_key(const Value& key, Value value);  // a number, boolean or none as the key
  Value key_at(size_t k) const;
  void erase(size_t k);
};

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
  // The argument at `index` or called `name`, or nullptr.
  const Value* get(size_t index, std::string_view name) const;
  const Value* keyword(std::string_view name) const;
};

using NativeFn = std::function<Value(const Args&, Interpreter&, Env&)>;

enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

// A template value. Lists, dicts and namespaces are shared by reference, as in Jinja: a namespace
// changed inside a loop is changed for the template.
struct Value {
  Kind kind = Kind::Undefined;
  bool tuple = false;  // a List written (a, b); prints and compares as a list
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // Dict and Namespace
  std::shared_ptr<const NativeFn> fn;

  static Value none() { Value v; v.kind = Kind::None; return v; }
  static Value boolean(bool x) { Value v; v.kind = Kind::Bool; v.b = x; return v; }
  static Value integer(int64_t x) { Value v; v.kind = Kind::Int; v.i = x; return v; }
  static Value floating(double x) { Value v; v.kind = Kind::Float; v.f = x; return v; }
  static Value string(std::string x) { Value v; v.kind = Kind::String; v.s = std::move(x); return v; }
  static Value make_list(List items = {});
  static Value make_dict(Dict d = {});
  static Value make_namespace(Dict d = {});
  static Value function(NativeFn f);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_mapping() const { return kind == Kind::Dict; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float; }
  bool truthy() const;
  const char* type_name() const;
};

// While one is alive on a thread, every list and dict made there is remembered; release() (and
// the destructor) empties those still alive, breaking the reference cycles a template can build
// (l.append(l)) that shared ownership alone would leak. render() uses one per call.
class ContainerArena {
 public:
  ContainerArena();
  ~ContainerArena();
  ContainerArena(const ContainerArena&) = delete;
  ContainerArena& operator=(const ContainerArena&) = delete;
  void release();

  struct State;

 private:
  std::unique_ptr<State> state_;
  void* previous_;
};

// A copy with lists and dicts of its own (made in the current arena).
Value deep_copy(const Value& v, int depth = 0);

// JSON in, as the reference converts JavaScript values: a number with no fraction is an integer.
Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);
// Back to JSON (undefined and functions become null).
nlohmann::json to_json(const Value& v);

// ---------------------------------------------------------------------------------------------
// Syntax tree.

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Block = std::vector<StmtPtr>;

struct CallArg {
  std::string keyword;  // empty: positional
  int spread = 0;       // 1: *expr, 2: **expr
  ExprPtr value;
};

enum class ExprKind : uint8_t {
  Literal, Name, ListLit, TupleLit, DictLit, Attr, Index, Slice, Call, Filter, Test, Neg, Pos,
  Not, Binary, And, Or, Ternary, Select
};

struct Expr {
  ExprKind kind = ExprKind::Literal;
  uint32_t pos = 0;       // offset in the original source
  Value literal;          // Literal
  std::string name;       // Name, Attr, Filter, Test; Binary: the operator
  bool negate = false;    // Test: "is not"
  bool has_args = false;  // Filter / Test written with parentheses
  std::vector<ExprPtr> kids;  // operands; Slice: object, start, stop, step (null when absent)
  std::vector<CallArg> args;  // Call, Filter, Test
};

enum class StmtKind : uint8_t {
  Text, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, Break, Continue, Do
};

struct Param {
  std::string name;
  ExprPtr default_value;  // may be null
};

struct Stmt {
  StmtKind kind = StmtKind::Text;
  uint32_t pos = 0;
  std::string text;                  // Text; Macro: name
  ExprPtr expr;                      // Output, If test, For iterable, Set value, CallBlock call,
                                     // FilterBlock filter (a Filter with no operand), Do
  ExprPtr target;                    // Set / SetBlock / For: name, tuple or attribute
  ExprPtr loop_filter;               // For ... if cond
  Block body;
  Block else_body;                   // If: else/elif branch; For: else
  std::vector<Param> params;         // Macro, CallBlock (caller's parameters)
};

struct Program {
  std::string source;  // original text, for line and column of errors
  Block body;
};

// Parses template source. Throws FormatError with line and column.
std::shared_ptr<const Program> parse(std::string source);

struct RenderLimits {
  size_t max_output = 16u << 20;       // bytes of rendered text (and of any one string)
  size_t max_items = 1u << 17;         // elements of any one list
  int64_t max_loop_iterations = 1000000;
  int64_t max_steps = 50000000;        // expressions and statements evaluated
  int max_depth = 400;                 // nested evaluation (macro recursion included)
};

struct RenderInput {
  // Global variables (messages, bos_token, ...), set after the built-in globals.
  std::vector<std::pair<std::string, Value>> globals;
  // What strftime_now formats: {year, month, day, hour, minute, second}; all zero: the clock.
  int date[6] = {0, 0, 0, 0, 0, 0};
  RenderLimits limits;
};

// Renders a parsed program. Throws InvalidArgument (raise_exception's message, or a runtime error
// with line and column).
std::string render(const Program& program, const RenderInput& input);

// Line and column (1-based) of an offset in `source`.
std::pair<int, int> source_line_col(const std::string& source, uint32_t pos);

// Helpers shared with tests.
std::string to_display(const Value& v);  // how {{ v }} prints it
// JSON text as the tojson filter writes it; indent < 0: on one line.
std::string to_json_text(const Value& v, int indent, bool sort_keys, bool ensure_ascii,
                         const std::string* item_sep = nullptr,
                         const std::string* key_sep = nullptr);

}  // namespace sq::jinja
