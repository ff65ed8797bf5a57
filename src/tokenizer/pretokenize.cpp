#include "tokenizer/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <utility>

#include "base/error.h"
#include "tokenizer/unicode.h"

namespace sq {
namespace {

// The patterns are those llama.cpp applies for each `tokenizer.ggml.pre` (llama-vocab.cpp), which
// reproduce the Hugging Face tokenizers the vocabularies came from. Where llama.cpp rewrote a
// case-insensitive group as explicit classes, so do we: under UCP, (?i) would also fold the Kelvin
// sign and the long s into ASCII letters.
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kCrLf = R"([\r\n])";
// CJK unified ideographs U+4E00..U+9FA5, U+0800..U+4E00 and Hangul U+AC00..U+D7FF, as in the
// DeepSeek tokenizers.
constexpr const char* kDeepseekCjk = R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";
// DeepSeek LLM's letter class: cased letters of many scripts, written out by the original tokenizer.
constexpr const char* kDeepseekLlmLetters =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293})"
    R"(\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A})"
    R"(\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556})"
    R"(\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF})"
    R"(\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D})"
    R"(\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D})"
    R"(\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3})"
    R"(\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107})"
    R"(\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D})"
    R"(\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184})"
    R"(\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D})"
    R"(\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF})"
    R"(\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F})"
    R"(\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2})"
    R"(\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";
constexpr const char* kDeepseekLlmPunct =
    R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)";
// Anything but white space and a few sentence marks (ASCII, ellipsis, CJK and Indic stops).
constexpr const char* kPoro =
    R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+)";

std::vector<const char*> patterns_of(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::Gpt2: return {kGpt2};
    case PreTokenizerKind::Llama3: return {kLlama3};
    case PreTokenizerKind::Qwen2: return {kQwen2};
    case PreTokenizerKind::DeepseekLlm:
      return {kCrLf, kDeepseekLlmLetters, kDeepseekLlmPunct, R"(\s+$)", kDeepseekCjk, R"(\p{N}+)"};
    case PreTokenizerKind::DeepseekCoder:
      return {kCrLf, R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"};
    case PreTokenizerKind::Falcon:
      return {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, R"([0-9][0-9][0-9])"};
    case PreTokenizerKind::Starcoder: return {R"(\p{N})", kGpt2};
    case PreTokenizerKind::Poro: return {kPoro};
    case PreTokenizerKind::Viking: return {kPoro, R"(\p{N})"};
  }
  return {kGpt2};
}

struct NamedPre {
  std::string_view name;
  PreTokenizerKind kind;
  bool ignore_merges;
};

constexpr std::array kNamedPre = {
    NamedPre{"default", PreTokenizerKind::Gpt2, false},
    NamedPre{"gpt-2", PreTokenizerKind::Gpt2, false},
    NamedPre{"gpt2", PreTokenizerKind::Gpt2, false},
    NamedPre{"mpt", PreTokenizerKind::Gpt2, false},
    NamedPre{"olmo", PreTokenizerKind::Gpt2, false},
    NamedPre{"jais", PreTokenizerKind::Gpt2, false},
    NamedPre{"trillion", PreTokenizerKind::Gpt2, false},
    NamedPre{"llama3", PreTokenizerKind::Llama3, true},
    NamedPre{"llama-v3", PreTokenizerKind::Llama3, true},
    NamedPre{"llama-bpe", PreTokenizerKind::Llama3, true},
    NamedPre{"falcon3", PreTokenizerKind::Llama3, true},
    NamedPre{"pixtral", PreTokenizerKind::Llama3, true},
    NamedPre{"dbrx", PreTokenizerKind::Llama3, false},
    NamedPre{"smaug-bpe", PreTokenizerKind::Llama3, false},
    NamedPre{"chatglm-bpe", PreTokenizerKind::Llama3, false},
    NamedPre{"qwen2", PreTokenizerKind::Qwen2, false},
    NamedPre{"qwen2.5", PreTokenizerKind::Qwen2, false},
    NamedPre{"qwen-2.5", PreTokenizerKind::Qwen2, false},
    NamedPre{"deepseek-r1-qwen", PreTokenizerKind::Qwen2, false},
    NamedPre{"stablelm2", PreTokenizerKind::Qwen2, false},
    NamedPre{"hunyuan", PreTokenizerKind::Qwen2, false},
    NamedPre{"deepseek-llm", PreTokenizerKind::DeepseekLlm, false},
    NamedPre{"deepseek-coder", PreTokenizerKind::DeepseekCoder, false},
    NamedPre{"falcon", PreTokenizerKind::Falcon, false},
    NamedPre{"starcoder", PreTokenizerKind::Starcoder, false},
    NamedPre{"refact", PreTokenizerKind::Starcoder, false},
    NamedPre{"command-r", PreTokenizerKind::Starcoder, false},
    NamedPre{"smollm", PreTokenizerKind::Starcoder, false},
    NamedPre{"codeshell", PreTokenizerKind::Starcoder, false},
    NamedPre{"exaone", PreTokenizerKind::Starcoder, false},
    NamedPre{"minerva-7b", PreTokenizerKind::Starcoder, false},
    NamedPre{"poro-chat", PreTokenizerKind::Poro, false},
    NamedPre{"bloom", PreTokenizerKind::Poro, false},
    NamedPre{"gpt3-finnish", PreTokenizerKind::Poro, false},
    NamedPre{"viking", PreTokenizerKind::Viking, false},
};

}  // namespace

PreTokenizerChoice choose_pre_tokenizer(std::string_view pre) {
  if (pre.empty()) return {};
  for (const auto& named : kNamedPre) {
    if (named.name == pre) return {named.kind, true, named.ignore_merges};
  }
  return {PreTokenizerKind::Gpt2, false, false};
}

std::string known_pre_tokenizers() {
  std::string out;
  for (const auto& named : kNamedPre) {
    if (!out.empty()) out += ", ";
    out += named.name;
  }
  return out;
}

struct PreTokenizer::Pattern {
  pcre2_code* code = nullptr;
  ~Pattern() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(PreTokenizerKind kind) {
  for (const char* source : patterns_of(kind)) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    auto pattern = std::make_unique<Pattern>();
    pattern->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source), PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (pattern->code == nullptr) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error, message.data(), message.size());
      fail<Error>("pre-tokenizer pattern does not compile at offset {}: {} (pattern: {})", offset,
                  reinterpret_cast<const char*>(message.data()), source);
    }
    // JIT is an optimisation only: without it (no JIT support on this CPU or build) the
    // interpreter gives the same matches.
    pcre2_jit_compile(pattern->code, PCRE2_JIT_COMPLETE);
    patterns_.push_back(std::move(pattern));
  }
}

PreTokenizer::~PreTokenizer() = default;

namespace {

struct MatchData {
  pcre2_match_data* data;
  explicit MatchData(const pcre2_code* code) : data(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (data == nullptr) throw std::bad_alloc();
  }
  ~MatchData() { pcre2_match_data_free(data); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
};

// One pattern over one piece of well-formed UTF-8: matches and the gaps between them, in order.
void split_with(const pcre2_code* code, pcre2_match_data* md, std::string_view piece,
                std::vector<std::string_view>& out) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t start = 0;  // where the next search begins
  size_t done = 0;   // end of what has been emitted
  while (start < piece.size()) {
    int rc = pcre2_match(code, subject, piece.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // A pathological run outgrew the JIT stack; the interpreter uses the heap instead.
      rc = pcre2_match(code, subject, piece.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(rc, message.data(), message.size());
      fail<Error>("pre-tokenizer match failed at byte {} of a {}-byte piece: {}", start,
                  piece.size(), reinterpret_cast<const char*>(message.data()));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t mb = ov[0];
    const size_t me = ov[1];
    if (me <= mb) {
      // None of the patterns matches empty, but never loop on one: step over a character.
      const size_t len = utf8::sequence_length(piece, start);
      start += len == 0 ? 1 : len;
      continue;
    }
    if (mb > done) out.push_back(piece.substr(done, mb - done));
    out.push_back(piece.substr(mb, me - mb));
    done = start = me;
  }
  if (done < piece.size()) out.push_back(piece.substr(done));
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  if (text.empty()) return;
  // Well-formed runs go through the patterns; each malformed byte is a piece of its own.
  std::vector<std::string_view> pieces;
  std::vector<bool> opaque;
  size_t run = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = utf8::sequence_length(text, pos);
    if (len != 0) {
      pos += len;
      continue;
    }
    if (pos > run) {
      pieces.push_back(text.substr(run, pos - run));
      opaque.push_back(false);
    }
    pieces.push_back(text.substr(pos, 1));
    opaque.push_back(true);
    run = ++pos;
  }
  if (run < text.size()) {
    pieces.push_back(text.substr(run));
    opaque.push_back(false);
  }

  std::vector<std::string_view> next;
  std::vector<bool> next_opaque;
  for (const auto& pattern : patterns_) {
    MatchData md(pattern->code);
    next.clear();
    next_opaque.clear();
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (opaque[i]) {
        next.push_back(pieces[i]);
        next_opaque.push_back(true);
        continue;
      }
      split_with(pattern->code, md.data, pieces[i], next);
      next_opaque.resize(next.size(), false);
    }
    pieces.swap(next);
    opaque.swap(next_opaque);
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

}  // namespace sq
