// Jinja source to syntax tree: the whitespace rules (trim_blocks, lstrip_blocks, the
// transformers-only {% generation %} tag), a lexer and a recursive-descent parser with the
// reference renderer's operator precedence. Every position kept is an offset in the original
// source, so that errors name the line and column the author sees.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "base/error.h"
#include "chat/jinja.h"

namespace sq::jinja {
namespace {

constexpr int kMaxParseDepth = 200;  // nesting of expressions and blocks

// Line and column (1-based, columns in bytes) of an offset.
std::pair<int, int> line_col(const std::string& source, uint32_t pos) {
  int line = 1, col = 1;
  const size_t end = std::min<size_t>(pos, source.size());
  for (size_t k = 0; k < end; ++k) {
    if (source[k] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

// Text with, for each byte, the offset it came from in the original source.
struct Mapped {
  std::string text;
  std::vector<uint32_t> from;
  void push(char c, uint32_t origin) {
    text.push_back(c);
    from.push_back(origin);
  }
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_word(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

// The reference's preprocessing, in its order: one trailing newline dropped; lstrip_blocks
// (spaces and tabs before "{%", "{#" or "{-" at the start of a line); trim_blocks (the newline
// after "%}", "#}" or "-}"); then the {% generation %} / {% endgeneration %} markers removed with
// the whitespace around them unless their own "-" says otherwise.
Mapped preprocess(const std::string& source) {
  Mapped a;
  size_t n = source.size();
  if (n > 0 && source[n - 1] == '\n') --n;
  // lstrip_blocks
  for (size_t k = 0; k < n;) {
    const bool line_start = k == 0 || source[k - 1] == '\n' || source[k - 1] == '\r';
    if (line_start) {
      size_t e = k;
      while (e < n && (source[e] == ' ' || source[e] == '\t')) ++e;
      if (e + 1 < n && source[e] == '{' &&
          (source[e + 1] == '%' || source[e + 1] == '#' || source[e + 1] == '-')) {
        k = e;
      }
    }
    a.push(source[k], static_cast<uint32_t>(k));
    ++k;
  }
  // trim_blocks
  Mapped b;
  for (size_t k = 0; k < a.text.size(); ++k) {
    b.push(a.text[k], a.from[k]);
    if (k >= 1 && a.text[k] == '}' && k + 1 < a.text.size() && a.text[k + 1] == '\n' &&
        (a.text[k - 1] == '%' || a.text[k - 1] == '#' || a.text[k - 1] == '-')) {
      ++k;  // drop the newline
    }
  }
  // {% generation %} markers
  Mapped c;
  const std::string& t = b.text;
  size_t k = 0;
  while (k < t.size()) {
    size_t open = t.find("{%", k);
    if (open == std::string::npos) break;
    size_t p = open + 2;
    const bool lstrip = p < t.size() && t[p] == '-';
    if (lstrip) ++p;
    while (p < t.size() && is_space(t[p])) ++p;
    if (t.compare(p, 3, "end") == 0) p += 3;
    bool match = t.compare(p, 10, "generation") == 0;
    bool rstrip = false;
    if (match) {
      p += 10;
      while (p < t.size() && is_space(t[p])) ++p;
      rstrip = p < t.size() && t[p] == '-';
      if (rstrip) ++p;
      match = t.compare(p, 2, "%}") == 0;
    }
    if (!match) {
      for (; k < open + 2; ++k) c.push(t[k], b.from[k]);
      continue;
    }
    p += 2;
    // Whitespace before the marker (already copied) and after it.
    size_t before = open;
    while (before > k && is_space(t[before - 1])) --before;
    for (; k < before; ++k) c.push(t[k], b.from[k]);
    if (!lstrip) {
      for (; k < open; ++k) c.push(t[k], b.from[k]);
    }
    size_t after = p;
    while (after < t.size() && is_space(t[after])) ++after;
    if (!rstrip) {
      for (size_t q = p; q < after; ++q) c.push(t[q], b.from[q]);
    }
    k = after;
  }
  for (; k < t.size(); ++k) c.push(t[k], b.from[k]);
  return c;
}

enum class Tok : uint8_t {
  Text, Comment, Number, String, Ident, Equals, LParen, RParen, OpenStmt, CloseStmt, OpenExpr,
  CloseExpr, LBracket, RBracket, LBrace, RBrace, Comma, Dot, Colon, Pipe, Additive,
  Multiplicative, Power, Compare, Unary, End
};

const char* tok_name(Tok t) {
  switch (t) {
    case Tok::Text: return "text";
    case Tok::Comment: return "comment";
    case Tok::Number: return "number";
    case Tok::String: return "string";
    case Tok::Ident: return "name";
    case Tok::Equals: return "'='";
    case Tok::LParen: return "'('";
    case Tok::RParen: return "')'";
    case Tok::OpenStmt: return "'{%'";
    case Tok::CloseStmt: return "'%}'";
    case Tok::OpenExpr: return "'{{'";
    case Tok::CloseExpr: return "'}}'";
    case Tok::LBracket: return "'['";
    case Tok::RBracket: return "']'";
    case Tok::LBrace: return "'{'";
    case Tok::RBrace: return "'}'";
    case Tok::Comma: return "','";
    case Tok::Dot: return "'.'";
    case Tok::Colon: return "':'";
    case Tok::Pipe: return "'|'";
    case Tok::Additive: return "operator";
    case Tok::Multiplicative: return "operator";
    case Tok::Power: return "'**'";
    case Tok::Compare: return "comparison";
    case Tok::Unary: return "operator";
    case Tok::End: return "end of template";
  }
  return "?";
}

struct Token {
  Tok type;
  std::string value;
  uint32_t pos;  // original offset
};

class Lexer {
 public:
  Lexer(const Mapped& m, const std::string& original) : m_(m), src_(m.text), original_(original) {}

  std::vector<Token> run() {
    while (cur_ < src_.size()) step();
    tokens_.push_back({Tok::End, "", origin(src_.size())});
    return std::move(tokens_);
  }

 private:
  const Mapped& m_;
  const std::string& src_;
  const std::string& original_;
  size_t cur_ = 0;
  int curly_depth_ = 0;
  std::vector<Token> tokens_;

  uint32_t origin(size_t k) const {
    if (k < m_.from.size()) return m_.from[k];
    return static_cast<uint32_t>(original_.size());
  }

  [[noreturn]] void error(size_t at, const std::string& what) const {
    auto [line, col] = line_col(original_, origin(at));
    fail<FormatError>("chat template syntax error at line {}, column {}: {}", line, col, what);
  }

  bool at(size_t k, const char* s) const { return src_.compare(k, std::strlen(s), s) == 0; }
  Tok last_type() const { return tokens_.empty() ? Tok::End : tokens_.back().type; }
  void push(Tok t, std::string v, size_t at_pos) { tokens_.push_back({t, std::move(v), origin(at_pos)}); }

  void strip_trailing_whitespace() {
    if (!tokens_.empty() && tokens_.back().type == Tok::Text) {
      std::string& v = tokens_.back().value;
      while (!v.empty() && is_space(v.back())) v.pop_back();
      if (v.empty()) tokens_.pop_back();
    }
  }
  void skip_whitespace() {
    while (cur_ < src_.size() && is_space(src_[cur_])) ++cur_;
  }

  // {% raw %}...{% endraw %}: the text between is output as it is. (The reference has no raw
  // blocks; Jinja has them and a few templates quote Jinja syntax with them.)
  bool try_raw() {
    size_t p = cur_ + 2;
    const bool lstrip = p < src_.size() && src_[p] == '-';
    if (lstrip) ++p;
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (!at(p, "raw")) return false;
    p += 3;
    while (p < src_.size() && is_space(src_[p])) ++p;
    bool rstrip = p < src_.size() && src_[p] == '-';
    if (rstrip) ++p;
    if (!at(p, "%}")) return false;
    p += 2;
    // Find {%[-] endraw [-]%}
    size_t q = p;
    while (true) {
      q = src_.find("{%", q);
      if (q == std::string::npos) error(cur_, "{% raw %} without {% endraw %}");
      size_t r = q + 2;
      const bool end_lstrip = r < src_.size() && src_[r] == '-';
      if (end_lstrip) ++r;
      while (r < src_.size() && is_space(src_[r])) ++r;
      if (at(r, "endraw")) {
        r += 6;
        while (r < src_.size() && is_space(src_[r])) ++r;
        const bool end_rstrip = r < src_.size() && src_[r] == '-';
        if (end_rstrip) ++r;
        if (at(r, "%}")) {
          if (lstrip) strip_trailing_whitespace();
          size_t a = p, b = q;
          if (rstrip) {
            while (a < b && is_space(src_[a])) ++a;
          }
          if (end_lstrip) {
            while (b > a && is_space(src_[b - 1])) --b;
          }
          // The raw text becomes a Text token; following text must not merge with it, so it is
          // closed like a comment.
          push(Tok::Text, src_.substr(a, b - a), a);
          push(Tok::Comment, "", r);
          cur_ = r + 2;
          if (end_rstrip) skip_whitespace();
          return true;
        }
      }
      q += 2;
    }
  }

  std::string consume_string(char quote) {
    std::string out;
    const size_t start = cur_;
    while (true) {
      if (cur_ >= src_.size()) error(start, "string literal is not closed");
      char c = src_[cur_];
      if (c == quote) {
        ++cur_;
        return out;
      }
      if (c == '\\') {
        ++cur_;
        if (cur_ >= src_.size()) error(start, "string literal is not closed");
        const char e = src_[cur_++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'v': out += '\v'; break;
          case '\'': out += '\''; break;
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case 'x':
          case 'u': {
            const size_t len = e == 'x' ? 2 : 4;
            if (cur_ + len > src_.size()) error(cur_ - 2, "incomplete \\x or \\u escape");
            uint32_t cp = 0;
            for (size_t k = 0; k < len; ++k) {
              const char h = src_[cur_ + k];
              int d = is_digit(h) ? h - '0'
                      : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                      : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                               : -1;
              if (d < 0) error(cur_ - 2, "invalid hexadecimal escape");
              cp = cp * 16 + static_cast<uint32_t>(d);
            }
            cur_ += len;
            // UTF-8 (a lone surrogate becomes U+FFFD).
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
            if (cp < 0x80) {
              out += static_cast<char>(cp);
            } else if (cp < 0x800) {
              out += static_cast<char>(0xC0 | (cp >> 6));
              out += static_cast<char>(0x80 | (cp & 0x3F));
            } else {
              out += static_cast<char>(0xE0 | (cp >> 12));
              out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
              out += static_cast<char>(0x80 | (cp & 0x3F));
            }
            break;
          }
          default:
            // Python keeps an unknown escape as written.
            out += '\\';
            out += e;
        }
        continue;
      }
      out += c;
      ++cur_;
    }
  }

  std::string consume_digits() {
    const size_t s = cur_;
    while (cur_ < src_.size() && is_digit(src_[cur_])) ++cur_;
    return src_.substr(s, cur_ - s);
  }

  void step() {
    const Tok lt = last_type();
    if (lt == Tok::End || lt == Tok::CloseStmt || lt == Tok::CloseExpr || lt == Tok::Comment) {
      const size_t s = cur_;
      while (cur_ < src_.size() &&
             !(src_[cur_] == '{' && cur_ + 1 < src_.size() &&
               (src_[cur_ + 1] == '%' || src_[cur_ + 1] == '{' || src_[cur_ + 1] == '#'))) {
        ++cur_;
      }
      if (cur_ > s) {
        push(Tok::Text, src_.substr(s, cur_ - s), s);
        return;
      }
    }
    if (at(cur_, "{#")) {
      const size_t s = cur_;
      cur_ += 2;
      const bool strip_before = cur_ < src_.size() && src_[cur_] == '-';
      const size_t close = src_.find("#}", cur_);
      if (close == std::string::npos) error(s, "comment {# is not closed with #}");
      const bool strip_after = close > cur_ && src_[close - 1] == '-';
      if (strip_before) strip_trailing_whitespace();
      push(Tok::Comment, "", s);
      cur_ = close + 2;
      if (strip_after) skip_whitespace();
      return;
    }
    if (at(cur_, "{%") && (lt == Tok::End || lt == Tok::CloseStmt || lt == Tok::CloseExpr ||
                           lt == Tok::Comment || lt == Tok::Text)) {
      if (try_raw()) return;
    }
    if (at(cur_, "{%-")) {
      strip_trailing_whitespace();
      push(Tok::OpenStmt, "{%", cur_);
      cur_ += 3;
      return;
    }
    if (at(cur_, "{{-")) {
      strip_trailing_whitespace();
      push(Tok::OpenExpr, "{{", cur_);
      curly_depth_ = 0;
      cur_ += 3;
      return;
    }
    skip_whitespace();
    if (cur_ >= src_.size()) return;
    if (at(cur_, "-%}")) {
      push(Tok::CloseStmt, "%}", cur_);
      cur_ += 3;
      skip_whitespace();
      return;
    }
    if (at(cur_, "-}}")) {
      push(Tok::CloseExpr, "}}", cur_);
      cur_ += 3;
      skip_whitespace();
      return;
    }
    const char c = src_[cur_];
    if (c == '-' || c == '+') {
      const Tok prev = last_type();
      if (prev == Tok::Text || prev == Tok::End) error(cur_, std::string("unexpected '") + c + "'");
      if (prev != Tok::Ident && prev != Tok::Number && prev != Tok::String && prev != Tok::RParen &&
          prev != Tok::RBracket) {
        const size_t s = cur_;
        ++cur_;
        std::string num = consume_digits();
        if (!num.empty() && cur_ + 1 < src_.size() && src_[cur_] == '.' &&
            is_digit(src_[cur_ + 1])) {
          ++cur_;
          num += "." + consume_digits();
        }
        if (num.empty()) {
          push(Tok::Unary, std::string(1, c), s);
        } else {
          push(Tok::Number, std::string(1, c) + num, s);
        }
        return;
      }
    }
    struct Rule {
      const char* seq;
      Tok type;
    };
    static constexpr Rule kRules[] = {
        {"{%", Tok::OpenStmt}, {"%}", Tok::CloseStmt}, {"{{", Tok::OpenExpr},
        {"}}", Tok::CloseExpr}, {"(", Tok::LParen},     {")", Tok::RParen},
        {"{", Tok::LBrace},     {"}", Tok::RBrace},     {"[", Tok::LBracket},
        {"]", Tok::RBracket},   {",", Tok::Comma},      {".", Tok::Dot},
        {":", Tok::Colon},      {"|", Tok::Pipe},       {"<=", Tok::Compare},
        {">=", Tok::Compare},   {"==", Tok::Compare},   {"!=", Tok::Compare},
        {"<", Tok::Compare},    {">", Tok::Compare},    {"+", Tok::Additive},
        {"-", Tok::Additive},   {"~", Tok::Additive},   {"**", Tok::Power},
        {"*", Tok::Multiplicative}, {"//", Tok::Multiplicative}, {"/", Tok::Multiplicative},
        {"%", Tok::Multiplicative}, {"=", Tok::Equals},
    };
    for (const Rule& r : kRules) {
      if (r.type == Tok::CloseExpr && curly_depth_ > 0) continue;
      if (at(cur_, r.seq)) {
        push(r.type, r.seq, cur_);
        if (r.type == Tok::OpenExpr) curly_depth_ = 0;
        if (r.type == Tok::LBrace) ++curly_depth_;
        if (r.type == Tok::RBrace) --curly_depth_;
        cur_ += std::strlen(r.seq);
        return;
      }
    }
    if (c == '\'' || c == '"') {
      const size_t s = cur_;
      ++cur_;
      push(Tok::String, consume_string(c), s);
      return;
    }
    if (is_digit(c)) {
      const size_t s = cur_;
      std::string num = consume_digits();
      if (last_type() != Tok::Dot && cur_ + 1 < src_.size() && src_[cur_] == '.' &&
          is_digit(src_[cur_ + 1])) {
        ++cur_;
        num += "." + consume_digits();
      }
      push(Tok::Number, num, s);
      return;
    }
    if (is_word(c)) {
      const size_t s = cur_;
      while (cur_ < src_.size() && is_word(src_[cur_])) ++cur_;
      push(Tok::Ident, src_.substr(s, cur_ - s), s);
      return;
    }
    error(cur_, std::string("unexpected character '") + c + "'");
  }
};

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& source)
      : t_(std::move(tokens)), source_(source) {}

  Block parse_all() {
    Block body;
    while (peek().type != Tok::End) body.push_back(parse_any());
    return body;
  }

 private:
  std::vector<Token> t_;
  const std::string& source_;
  size_t cur_ = 0;
  int depth_ = 0;

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxParseDepth) {
        p.error(p.peek(), "the template nests deeper than " + std::to_string(kMaxParseDepth) +
                              " levels");
      }
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& peek(size_t ahead = 0) const {
    const size_t k = std::min(cur_ + ahead, t_.size() - 1);
    return t_[k];
  }
  const Token& next() {
    const Token& tk = t_[std::min(cur_, t_.size() - 1)];
    if (cur_ < t_.size() - 1) ++cur_;
    return tk;
  }
  bool is(Tok type) const { return peek().type == type; }
  bool is_ident(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).type == Tok::Ident && peek(ahead).value == name;
  }
  bool is_statement(std::initializer_list<std::string_view> names) const {
    if (peek().type != Tok::OpenStmt || peek(1).type != Tok::Ident) return false;
    for (auto n : names) {
      if (peek(1).value == n) return true;
    }
    return false;
  }

  [[noreturn]] void error(const Token& at, const std::string& what) const {
    auto [line, col] = line_col(source_, at.pos);
    fail<FormatError>("chat template syntax error at line {}, column {}: {}", line, col, what);
  }
  std::string describe(const Token& tk) const {
    if (tk.type == Tok::End) return "the end of the template";
    if (tk.type == Tok::Ident) return "'" + tk.value + "'";
    if (tk.type == Tok::String) return "a string";
    if (tk.type == Tok::Number) return "'" + tk.value + "'";
    if (tk.type == Tok::Text) return "text";
    return tk.value.empty() ? tok_name(tk.type) : "'" + tk.value + "'";
  }
  const Token& expect(Tok type, const char* what) {
    if (!is(type)) error(peek(), std::string("expected ") + what + ", got " + describe(peek()));
    return next();
  }
  void expect_ident(std::string_view name) {
    if (!is_ident(name)) {
      error(peek(), "expected '" + std::string(name) + "', got " + describe(peek()));
    }
    next();
  }
  // Statement bodies end at one of `names`; running out of tokens is the usual mistake.
  Block parse_until(std::initializer_list<std::string_view> names, const Token& opener,
                    const char* opener_name) {
    Block body;
    while (!is_statement(names)) {
      if (is(Tok::End)) {
        std::string expected;
        for (auto n : names) expected += (expected.empty() ? "{% " : " or {% ") + std::string(n) + " %}";
        error(opener, std::string("{% ") + opener_name + " %} is not closed: expected " + expected +
                          " before the end of the template");
      }
      body.push_back(parse_any());
    }
    return body;
  }

  StmtPtr make_stmt(StmtKind kind, uint32_t pos) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->pos = pos;
    return s;
  }
  ExprPtr make_expr(ExprKind kind, uint32_t pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  StmtPtr parse_any() {
    DepthGuard guard(*this);
    const Token& tk = peek();
    switch (tk.type) {
      case Tok::Comment: {
        next();
        auto s = make_stmt(StmtKind::Text, tk.pos);
        return s;
      }
      case Tok::Text: {
        auto s = make_stmt(StmtKind::Text, tk.pos);
        s->text = next().value;
        return s;
      }
      case Tok::OpenStmt:
        return parse_statement();
      case Tok::OpenExpr: {
        next();
        auto s = make_stmt(StmtKind::Output, tk.pos);
        s->expr = parse_expression();
        expect(Tok::CloseExpr, "'}}'");
        return s;
      }
      default:
        error(tk, "unexpected " + describe(tk));
    }
  }

  StmtPtr parse_statement() {
    const Token open = next();  // {%
    if (!is(Tok::Ident)) error(peek(), "expected a statement name after '{%', got " + describe(peek()));
    const Token name = next();
    const std::string& n = name.value;
    if (n == "set") return parse_set(open);
    if (n == "if") {
      auto s = parse_if(open);
      expect(Tok::OpenStmt, "'{% endif %}'");
      expect_ident("endif");
      expect(Tok::CloseStmt, "'%}'");
      return s;
    }
    if (n == "for") return parse_for(open);
    if (n == "macro") return parse_macro(open);
    if (n == "call") return parse_call_block(open);
    if (n == "filter") {
      auto s = make_stmt(StmtKind::FilterBlock, open.pos);
      s->expr = parse_filter_spec(nullptr);
      expect(Tok::CloseStmt, "'%}'");
      s->body = parse_until({"endfilter"}, open, "filter");
      next();
      next();
      expect(Tok::CloseStmt, "'%}'");
      return s;
    }
    if (n == "break" || n == "continue") {
      expect(Tok::CloseStmt, "'%}'");
      return make_stmt(n == "break" ? StmtKind::Break : StmtKind::Continue, open.pos);
    }
    if (n == "do") {
      auto s = make_stmt(StmtKind::Do, open.pos);
      s->expr = parse_expression();
      expect(Tok::CloseStmt, "'%}'");
      return s;
    }
    error(name, "unknown statement '" + n + "'" +
                    (n.rfind("end", 0) == 0 || n == "else" || n == "elif"
                         ? " (no block is open here)"
                         : ""));
  }

  StmtPtr parse_set(const Token& open) {
    auto s = make_stmt(StmtKind::Set, open.pos);
    s->target = parse_target();
    if (is(Tok::Equals)) {
      next();
      s->expr = parse_expression_sequence(false);
      expect(Tok::CloseStmt, "'%}'");
      return s;
    }
    s->kind = StmtKind::SetBlock;
    expect(Tok::CloseStmt, "'=' or '%}'");
    s->body = parse_until({"endset"}, open, "set");
    next();
    next();
    expect(Tok::CloseStmt, "'%}'");
    return s;
  }

  // An assignment target: a name, name.attr, or names separated by commas.
  ExprPtr parse_target() {
    const Token& first = peek();
    ExprPtr one = parse_target_one();
    if (!is(Tok::Comma)) return one;
    auto tuple = make_expr(ExprKind::TupleLit, first.pos);
    tuple->kids.push_back(std::move(one));
    while (is(Tok::Comma)) {
      next();
      tuple->kids.push_back(parse_target_one());
    }
    return tuple;
  }
  ExprPtr parse_target_one() {
    const Token& tk = expect(Tok::Ident, "a variable name");
    auto name = make_expr(ExprKind::Name, tk.pos);
    name->name = tk.value;
    if (is(Tok::Dot)) {
      next();
      const Token& attr = expect(Tok::Ident, "an attribute name");
      auto e = make_expr(ExprKind::Attr, attr.pos);
      e->name = attr.value;
      e->kids.push_back(std::move(name));
      return e;
    }
    return name;
  }

  StmtPtr parse_if(const Token& open) {
    auto s = make_stmt(StmtKind::If, open.pos);
    s->expr = parse_expression();
    expect(Tok::CloseStmt, "'%}'");
    s->body = parse_until({"elif", "else", "endif"}, open, "if");
    if (is_statement({"elif"})) {
      const Token elif = next();
      next();
      s->else_body.push_back(parse_if(elif));
    } else if (is_statement({"else"})) {
      next();
      next();
      expect(Tok::CloseStmt, "'%}'");
      s->else_body = parse_until({"endif"}, open, "if");
    }
    return s;
  }

  StmtPtr parse_for(const Token& open) {
    auto s = make_stmt(StmtKind::For, open.pos);
    s->target = parse_target();
    if (s->target->kind == ExprKind::Attr) error(open, "a loop variable cannot be an attribute");
    expect_ident("in");
    // "for x in xs if cond": the condition filters the items (Jinja's loop filter).
    s->expr = parse_logical_or();
    if (is_ident("if")) {
      const uint32_t pos = next().pos;
      ExprPtr cond = parse_logical_or();
      if (is_ident("else")) {
        // Not a loop filter after all: "for x in a if c else b".
        next();
        auto e = make_expr(ExprKind::Ternary, pos);
        e->kids.push_back(std::move(cond));
        e->kids.push_back(std::move(s->expr));
        e->kids.push_back(parse_expression());
        s->expr = std::move(e);
      } else {
        s->loop_filter = std::move(cond);
      }
    }
    if (is_ident("recursive")) error(peek(), "recursive loops are not supported");
    expect(Tok::CloseStmt, "'%}'");
    s->body = parse_until({"endfor", "else"}, open, "for");
    if (is_statement({"else"})) {
      next();
      next();
      expect(Tok::CloseStmt, "'%}'");
      s->else_body = parse_until({"endfor"}, open, "for");
    }
    next();
    next();
    expect(Tok::CloseStmt, "'%}'");
    return s;
  }

  std::vector<Param> parse_params() {
    expect(Tok::LParen, "'('");
    std::vector<Param> params;
    bool saw_default = false;
    while (!is(Tok::RParen)) {
      const Token& name = expect(Tok::Ident, "a parameter name");
      Param p;
      p.name = name.value;
      for (const Param& q : params) {
        if (q.name == p.name) error(name, "duplicate parameter '" + p.name + "'");
      }
      if (is(Tok::Equals)) {
        next();
        p.default_value = parse_expression();
        saw_default = true;
      } else if (saw_default) {
        error(name, "parameter '" + p.name + "' without a default follows one with a default");
      }
      params.push_back(std::move(p));
      if (!is(Tok::Comma)) break;
      next();
    }
    expect(Tok::RParen, "')'");
    return params;
  }

  StmtPtr parse_macro(const Token& open) {
    auto s = make_stmt(StmtKind::Macro, open.pos);
    s->text = expect(Tok::Ident, "a macro name").value;
    s->params = parse_params();
    expect(Tok::CloseStmt, "'%}'");
    s->body = parse_until({"endmacro"}, open, "macro");
    next();
    next();
    if (is(Tok::Ident)) next();  // {% endmacro name %}
    expect(Tok::CloseStmt, "'%}'");
    return s;
  }

  StmtPtr parse_call_block(const Token& open) {
    auto s = make_stmt(StmtKind::CallBlock, open.pos);
    if (is(Tok::LParen)) s->params = parse_params();
    const Token& callee = expect(Tok::Ident, "the name of the macro to call");
    auto name = make_expr(ExprKind::Name, callee.pos);
    name->name = callee.value;
    ExprPtr target = parse_member(std::move(name));
    if (!is(Tok::LParen)) error(peek(), "expected '(' after the macro name in {% call %}");
    s->expr = parse_call(std::move(target));
    expect(Tok::CloseStmt, "'%}'");
    s->body = parse_until({"endcall"}, open, "call");
    next();
    next();
    expect(Tok::CloseStmt, "'%}'");
    return s;
  }

  // expr [, expr ...] as a tuple when there is a comma.
  ExprPtr parse_expression_sequence(bool primary) {
    const Token& first = peek();
    ExprPtr e = primary ? parse_primary() : parse_expression();
    if (!is(Tok::Comma)) return e;
    auto tuple = make_expr(ExprKind::TupleLit, first.pos);
    tuple->kids.push_back(std::move(e));
    while (is(Tok::Comma)) {
      next();
      if (is(Tok::RParen) || is(Tok::CloseStmt)) break;  // trailing comma
      tuple->kids.push_back(primary ? parse_primary() : parse_expression());
    }
    return tuple;
  }

  ExprPtr parse_expression() {
    DepthGuard guard(*this);
    const Token& first = peek();
    ExprPtr a = parse_logical_or();
    if (is_ident("if")) {
      next();
      ExprPtr test = parse_logical_or();
      if (is_ident("else")) {
        next();
        auto e = make_expr(ExprKind::Ternary, first.pos);
        e->kids.push_back(std::move(test));
        e->kids.push_back(std::move(a));
        e->kids.push_back(parse_expression());
        return e;
      }
      auto e = make_expr(ExprKind::Select, first.pos);
      e->kids.push_back(std::move(test));
      e->kids.push_back(std::move(a));
      return e;
    }
    return a;
  }

  ExprPtr binary(ExprKind kind, std::string op, ExprPtr a, ExprPtr b, uint32_t pos) {
    auto e = make_expr(kind, pos);
    e->name = std::move(op);
    e->kids.push_back(std::move(a));
    e->kids.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_logical_or() {
    ExprPtr left = parse_logical_and();
    while (is_ident("or")) {
      const uint32_t pos = next().pos;
      left = binary(ExprKind::Or, "or", std::move(left), parse_logical_and(), pos);
    }
    return left;
  }
  ExprPtr parse_logical_and() {
    ExprPtr left = parse_not();
    while (is_ident("and")) {
      const uint32_t pos = next().pos;
      left = binary(ExprKind::And, "and", std::move(left), parse_not(), pos);
    }
    return left;
  }
  ExprPtr parse_not() {
    if (is_ident("not")) {
      DepthGuard guard(*this);
      const uint32_t pos = next().pos;
      auto e = make_expr(ExprKind::Not, pos);
      e->kids.push_back(parse_not());
      return e;
    }
    return parse_comparison();
  }
  ExprPtr parse_comparison() {
    ExprPtr left = parse_additive();
    while (true) {
      std::string op;
      const uint32_t pos = peek().pos;
      if (is_ident("not") && is_ident("in", 1)) {
        next();
        next();
        op = "not in";
      } else if (is_ident("in")) {
        next();
        op = "in";
      } else if (is(Tok::Compare)) {
        op = next().value;
      } else {
        break;
      }
      left = binary(ExprKind::Binary, op, std::move(left), parse_additive(), pos);
    }
    return left;
  }
  ExprPtr parse_additive() {
    ExprPtr left = parse_multiplicative();
    while (is(Tok::Additive)) {
      const Token& op = next();
      left = binary(ExprKind::Binary, op.value, std::move(left), parse_multiplicative(), op.pos);
    }
    return left;
  }
  ExprPtr parse_multiplicative() {
    ExprPtr left = parse_power();
    while (is(Tok::Multiplicative)) {
      const Token& op = next();
      left = binary(ExprKind::Binary, op.value, std::move(left), parse_power(), op.pos);
    }
    return left;
  }
  ExprPtr parse_power() {
    ExprPtr left = parse_test();
    while (is(Tok::Power)) {
      const Token& op = next();
      left = binary(ExprKind::Binary, "**", std::move(left), parse_test(), op.pos);
    }
    return left;
  }
  ExprPtr parse_test() {
    ExprPtr operand = parse_filter();
    while (is_ident("is")) {
      const uint32_t pos = next().pos;
      auto e = make_expr(ExprKind::Test, pos);
      if (is_ident("not")) {
        next();
        e->negate = true;
      }
      // "is none", "is true" ...: the literals are test names here.
      if (!is(Tok::Ident)) error(peek(), "expected a test name after 'is', got " + describe(peek()));
      e->name = next().value;
      if (is(Tok::LParen)) {
        e->has_args = true;
        e->args = parse_args();
      } else if (is(Tok::Number) || is(Tok::String)) {
        // "is divisibleby 3", "is equalto 'x'"
        CallArg a;
        a.value = parse_primary();
        e->args.push_back(std::move(a));
        e->has_args = true;
      }
      e->kids.push_back(std::move(operand));
      operand = std::move(e);
    }
    return operand;
  }
  // "name" or "name(args)" of a filter; operand null for {% filter %}.
  ExprPtr parse_filter_spec(ExprPtr operand) {
    const Token& name = expect(Tok::Ident, "a filter name");
    auto e = make_expr(ExprKind::Filter, name.pos);
    e->name = name.value;
    if (is(Tok::LParen)) {
      e->has_args = true;
      e->args = parse_args();
    }
    e->kids.push_back(std::move(operand));
    return e;
  }
  ExprPtr parse_filter() {
    ExprPtr operand = parse_unary();
    while (is(Tok::Pipe)) {
      next();
      operand = parse_filter_spec(std::move(operand));
    }
    return operand;
  }
  ExprPtr parse_unary() {
    const Token& tk = peek();
    if ((tk.type == Tok::Unary || tk.type == Tok::Additive) && (tk.value == "-" || tk.value == "+")) {
      DepthGuard guard(*this);
      next();
      auto e = make_expr(tk.value == "-" ? ExprKind::Neg : ExprKind::Pos, tk.pos);
      e->kids.push_back(parse_unary());
      return e;
    }
    ExprPtr e = parse_member(parse_primary());
    if (is(Tok::LParen)) return parse_call(std::move(e));
    return e;
  }
  ExprPtr parse_call(ExprPtr callee) {
    DepthGuard guard(*this);
    auto e = make_expr(ExprKind::Call, callee->pos);
    e->args = parse_args();
    e->kids.push_back(std::move(callee));
    ExprPtr out = parse_member(std::move(e));
    if (is(Tok::LParen)) return parse_call(std::move(out));
    return out;
  }
  std::vector<CallArg> parse_args() {
    expect(Tok::LParen, "'('");
    std::vector<CallArg> args;
    bool saw_keyword = false;
    while (!is(Tok::RParen)) {
      CallArg a;
      if (is(Tok::Power)) {
        next();
        a.spread = 2;
        a.value = parse_expression();
        saw_keyword = true;
      } else if (is(Tok::Multiplicative) && peek().value == "*") {
        next();
        a.spread = 1;
        a.value = parse_expression();
      } else if (is(Tok::Ident) && peek(1).type == Tok::Equals) {
        a.keyword = next().value;
        next();
        a.value = parse_expression();
        saw_keyword = true;
      } else {
        if (saw_keyword) error(peek(), "a positional argument follows a keyword argument");
        a.value = parse_expression();
      }
      args.push_back(std::move(a));
      if (!is(Tok::Comma)) break;
      next();
    }
    expect(Tok::RParen, "')' or ','");
    return args;
  }
  ExprPtr parse_member(ExprPtr object) {
    while (is(Tok::Dot) || is(Tok::LBracket)) {
      DepthGuard guard(*this);
      const Token op = next();
      if (op.type == Tok::Dot) {
        const Token& prop = peek();
        if (prop.type == Tok::Ident) {
          next();
          auto e = make_expr(ExprKind::Attr, prop.pos);
          e->name = prop.value;
          e->kids.push_back(std::move(object));
          object = std::move(e);
        } else if (prop.type == Tok::Number && prop.value.find('.') == std::string::npos &&
                   prop.value[0] != '-' && prop.value[0] != '+') {
          next();
          auto e = make_expr(ExprKind::Index, prop.pos);
          auto key = make_expr(ExprKind::Literal, prop.pos);
          key->literal = Value::integer(parse_int(prop));
          e->kids.push_back(std::move(object));
          e->kids.push_back(std::move(key));
          object = std::move(e);
        } else {
          error(prop, "expected an attribute name after '.', got " + describe(prop));
        }
        continue;
      }
      // [key] or [start:stop:step]
      std::vector<ExprPtr> parts;
      bool slice = false;
      bool pending = true;  // a slot waiting for its value
      while (!is(Tok::RBracket)) {
        if (is(Tok::End)) error(op, "'[' is not closed");
        if (is(Tok::Colon)) {
          if (pending) parts.push_back(nullptr);
          next();
          slice = true;
          pending = true;
        } else {
          if (!pending) error(peek(), "expected ':' or ']' in a subscript");
          parts.push_back(parse_expression());
          pending = false;
        }
      }
      if (slice && pending) parts.push_back(nullptr);
      next();  // ]
      if (parts.empty()) error(op, "empty subscript []");
      if (slice) {
        if (parts.size() > 3) error(op, "a slice takes at most three parts [start:stop:step]");
        auto e = make_expr(ExprKind::Slice, op.pos);
        e->kids.push_back(std::move(object));
        for (auto& p : parts) e->kids.push_back(std::move(p));
        while (e->kids.size() < 4) e->kids.push_back(nullptr);
        object = std::move(e);
      } else {
        auto e = make_expr(ExprKind::Index, op.pos);
        e->kids.push_back(std::move(object));
        e->kids.push_back(std::move(parts[0]));
        object = std::move(e);
      }
    }
    return object;
  }

  int64_t parse_int(const Token& tk) {
    int64_t v = 0;
    const char* b = tk.value.data();
    const char* e = b + tk.value.size();
    if (*b == '+') ++b;
    auto r = std::from_chars(b, e, v);
    if (r.ec != std::errc() || r.ptr != e) error(tk, "integer " + tk.value + " is out of range");
    return v;
  }

  ExprPtr parse_primary() {
    DepthGuard guard(*this);
    const Token tk = next();
    switch (tk.type) {
      case Tok::Number: {
        auto e = make_expr(ExprKind::Literal, tk.pos);
        if (tk.value.find('.') != std::string::npos) {
          e->literal = Value::floating(std::strtod(tk.value.c_str(), nullptr));
        } else {
          int64_t v = 0;
          const char* b = tk.value.data();
          const char* end = b + tk.value.size();
          if (*b == '+') ++b;
          auto r = std::from_chars(b, end, v);
          if (r.ec != std::errc() || r.ptr != end) {
            e->literal = Value::floating(std::strtod(tk.value.c_str(), nullptr));
          } else {
            e->literal = Value::integer(v);
          }
        }
        return e;
      }
      case Tok::String: {
        std::string v = tk.value;
        while (is(Tok::String)) v += next().value;
        auto e = make_expr(ExprKind::Literal, tk.pos);
        e->literal = Value::string(std::move(v));
        return e;
      }
      case Tok::Ident: {
        auto e = make_expr(ExprKind::Name, tk.pos);
        e->name = tk.value;
        return e;
      }
      case Tok::LParen: {
        if (is(Tok::RParen)) {
          next();
          return make_expr(ExprKind::TupleLit, tk.pos);
        }
        ExprPtr e = parse_expression_sequence(false);
        expect(Tok::RParen, "')'");
        return e;
      }
      case Tok::LBracket: {
        auto e = make_expr(ExprKind::ListLit, tk.pos);
        while (!is(Tok::RBracket)) {
          if (is(Tok::End)) error(tk, "'[' is not closed");
          e->kids.push_back(parse_expression());
          if (!is(Tok::Comma)) break;
          next();
        }
        expect(Tok::RBracket, "']' or ','");
        return e;
      }
      case Tok::LBrace: {
        auto e = make_expr(ExprKind::DictLit, tk.pos);
        while (!is(Tok::RBrace)) {
          if (is(Tok::End)) error(tk, "'{' is not closed");
          e->kids.push_back(parse_expression());
          expect(Tok::Colon, "':' between a key and its value");
          e->kids.push_back(parse_expression());
          if (!is(Tok::Comma)) break;
          next();
        }
        expect(Tok::RBrace, "'}' or ','");
        return e;
      }
      default:
        error(tk, "expected an expression, got " + describe(tk));
    }
  }
};

}  // namespace

std::shared_ptr<const Program> parse(std::string source) {
  auto program = std::make_shared<Program>();
  program->source = std::move(source);
  const Mapped m = preprocess(program->source);
  Lexer lexer(m, program->source);
  Parser parser(lexer.run(), program->source);
  program->body = parser.parse_all();
  return program;
}

std::pair<int, int> source_line_col(const std::string& source, uint32_t pos) {
  return line_col(source, pos);
}

}  // namespace sq::jinja
