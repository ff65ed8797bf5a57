// Templates come from model files, so the parser and the interpreter are fuzzed: real templates
// mutated at random (bytes cut, repeated, flipped; Jinja fragments spliced in) must parse and
// render or fail with squeeze's own typed errors, never crash, hang or throw anything else. Runs
// under ASan and UBSan in the debug preset.
#include <cstdlib>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/mmap.h"
#include "chat/jinja.h"
#include "support.h"

namespace sq {
namespace {

const char* kFragments[] = {
    "{%", "%}", "{{", "}}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", "(", ")", "[", "]", "{", "}",
    "'", "\"", "\\", "|", ".", ",", ":", "::-1", "if ", " else ", "endif", "for x in ", "endfor",
    " in ", "macro m(a, b=1)", "endmacro", "set ", "=", "~", "**", "\n", "loop.", "ns.", "1e309",
    "-1", "9223372036854775807", "namespace(", "range(99999999)", "raise_exception('x')",
    "|tojson(indent=2)", "|join", "|map(attribute='x')", "caller()", "call m()", "endcall",
    "filter upper", "endfilter", "raw", "endraw", "break", "continue", ".append(", ".pop(", "*",
    "is defined", "not ", " and ", " or ", "messages", "message", "tools", "\xc3", "\xff",
};

std::string mutate(std::string s, std::mt19937& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int rounds = 1 + static_cast<int>(rng() % 4);
  for (int r = 0; r < rounds; ++r) {
    const size_t pos = pick(s.size() + 1);
    switch (rng() % 5) {
      case 0: {  // cut
        const size_t len = std::min(s.size() - std::min(pos, s.size()), 1 + pick(24));
        s.erase(std::min(pos, s.size()), len);
        break;
      }
      case 1: {  // repeat a piece
        if (s.empty()) break;
        const size_t a = pick(s.size());
        const size_t len = std::min(s.size() - a, 1 + pick(200));
        s.insert(pos, s.substr(a, len));
        break;
      }
      case 2:  // flip a byte
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(rng());
        break;
      default:  // splice in a fragment
        s.insert(pos, kFragments[pick(std::size(kFragments))]);
    }
  }
  return s;
}

jinja::RenderInput fuzz_input() {
  jinja::RenderInput in;
  const nlohmann::json messages = {
      {{"role", "system"}, {"content", "sys"}},
      {{"role", "user"}, {"content", "hi"}},
      {{"role", "assistant"},
       {"content", "<think>x</think>ok"},
       {"tool_calls",
        {{{"type", "function"}, {"function", {{"name", "f"}, {"arguments", {{"a", 1}}}}}}}}},
      {{"role", "tool"}, {"content", "1"}},
      {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "t"}}}}}};
  in.globals.emplace_back("messages", jinja::from_json(messages));
  in.globals.emplace_back("add_generation_prompt", jinja::Value::boolean(true));
  in.globals.emplace_back("bos_token", jinja::Value::string("<s>"));
  in.globals.emplace_back("eos_token", jinja::Value::string("</s>"));
  in.globals.emplace_back(
      "tools", jinja::from_json(nlohmann::json::parse(
                   R"([{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}])")));
  in.date[0] = 2024;
  in.date[1] = 1;
  in.date[2] = 2;
  // Small limits keep each case fast; they are what a hostile template meets, only sooner.
  in.limits.max_steps = 200000;
  in.limits.max_loop_iterations = 20000;
  in.limits.max_output = 1 << 20;
  in.limits.max_items = 1 << 16;
  return in;
}

// Parses and renders; true when it succeeded, false for a typed error. Anything else fails the
// test (a crash fails it too, harder).
bool try_template(const std::string& source, const jinja::RenderInput& in, const std::string& label) {
  try {
    auto program = jinja::parse(source);
    jinja::render(*program, in);
    return true;
  } catch (const FormatError&) {
  } catch (const InvalidArgument&) {
  } catch (const std::exception& e) {
    ADD_FAILURE() << label << ": unexpected exception " << typeid(e).name() << ": " << e.what();
  }
  return false;
}

TEST(ChatTemplateFuzz, MutatedRealTemplatesFailCleanly) {
  SQ_REQUIRE_SHARED(dir, "fixtures/chat-templates");
  std::vector<std::string> sources;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".jinja") sources.push_back(read_file(e.path().string()));
  }
  ASSERT_FALSE(sources.empty());
  std::sort(sources.begin(), sources.end());
  const jinja::RenderInput in = fuzz_input();
  // SQUEEZE_FUZZ_CASES / SQUEEZE_FUZZ_SEED run a longer or different campaign by hand.
  const char* n_env = std::getenv("SQUEEZE_FUZZ_CASES");
  const char* seed_env = std::getenv("SQUEEZE_FUZZ_SEED");
  std::mt19937 rng(seed_env ? static_cast<uint32_t>(std::strtoul(seed_env, nullptr, 10)) : 20240726u);
  int rendered = 0;
#ifdef __SANITIZE_ADDRESS__
  constexpr int kDefaultCases = 600;  // about ten times slower under ASan; keep the suite quick
#else
  constexpr int kDefaultCases = 1500;
#endif
  const int kCases = n_env ? std::max(1, std::atoi(n_env)) : kDefaultCases;
  for (int k = 0; k < kCases; ++k) {
    const std::string& base = sources[rng() % sources.size()];
    const std::string src = mutate(base, rng);
    rendered += try_template(src, in, "case " + std::to_string(k));
  }
  // A share of the mutants still parse and run, so the interpreter is exercised, not just the
  // parser's error path (about one in nine with this seed).
  EXPECT_GT(rendered, kCases / 20);
  std::printf("fuzz: %d of %d mutated templates rendered, the rest failed with typed errors\n",
              rendered, kCases);
}

TEST(ChatTemplateFuzz, RandomFragmentSoupFailsCleanly) {
  const jinja::RenderInput in = fuzz_input();
  std::mt19937 rng(7);
  for (int k = 0; k < 1000; ++k) {
    std::string src;
    const int n = 1 + static_cast<int>(rng() % 30);
    for (int j = 0; j < n; ++j) src += kFragments[rng() % std::size(kFragments)];
    try_template(src, in, "soup " + std::to_string(k) + ": " + src);
  }
}

}  // namespace
}  // namespace sq
