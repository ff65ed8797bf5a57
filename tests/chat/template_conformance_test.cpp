// Conformance: every real chat template in ../shared/fixtures/chat-templates, and squeeze's
// built-in formats, rendered over the conversations of conversations.json by squeeze and by the
// reference renderer @huggingface/jinja (render_reference.mjs, run once with node), compared byte
// for byte. Where the reference raises, squeeze must raise too, except for the deviations listed
// below: places where the reference lacks a feature of Python's Jinja that squeeze has.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/mmap.h"
#include "chat/template.h"
#include "support.h"

namespace sq {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

// Templates on which squeeze knowingly departs from the reference, and why. Any other difference
// fails the test.
struct Deviation {
  const char* name;
  const char* reason;
  bool reference_raises;  // true: the reference fails where squeeze renders (as Python's Jinja)
};
constexpr Deviation kDeviations[] = {
    {"tencent-Hy3", "the reference has no str.format()", true},
    {"ByteDance-Seed-OSS", "the reference refuses number keys in a dict literal", true},
    {"Kimi-K2-Instruct", "the reference has no list.append() / list.pop()", true},
    {"Kimi-K2-Thinking", "the reference has no list.append() / list.pop()", true},
    {"Apriel-1.6-15b-Thinker-fixed", "the reference has no `string` filter for dicts", true},
    {"unsloth-Apriel-1.5", "the reference has no `string` filter for dicts", true},
    {"openbmb-MiniCPM5-1B", "the reference has no `min` filter", true},
    {"meetkai-functionary-medium-v3.2",
     "the reference cannot unpack a tuple in a for loop over (key, value) tuples", true},
    {"HuggingFaceTB-SmolLM3-3B",
     "the reference ignores the argument of strip('\\n') and strips spaces too", false},
    {"Qwen-QwQ-32B", "the reference ignores the argument of strip('\\n') and strips spaces too",
     false},
};

const Deviation* deviation_for(const std::string& name) {
  for (const Deviation& d : kDeviations) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

std::string run_capture(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *status = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

struct Reference {
  std::string skip;     // why the comparison cannot run, or empty
  Json cases;           // conversations.json
  Json results;         // template -> case -> {"text"} | {"error"}
  std::map<std::string, std::string> sources;  // template -> Jinja source
  std::vector<std::string> builtins;           // names in `results` that are built-ins
};

// Runs the reference renderer once for the whole suite.
const Reference& reference() {
  static Reference r = [] {
    Reference ref;
    const std::string fixtures = test::shared_path("fixtures/chat-templates");
    if (fixtures.empty()) {
      ref.skip = "needs fixtures/chat-templates from the shared data folder";
      return ref;
    }
    const fs::path root = SQUEEZE_SOURCE_DIR;
    if (!fs::exists(root / "node_modules/@huggingface/jinja/package.json")) {
      ref.skip = "needs node_modules/@huggingface/jinja (scripts/setup.sh runs npm ci)";
      return ref;
    }
    int status = 0;
    run_capture("node --version 2>/dev/null", &status);
    if (status != 0) {
      ref.skip = "needs node on PATH to run the reference renderer";
      return ref;
    }
    // The built-ins go through the reference too, written out as template files.
    static test::TempDir dir;
    for (const std::string& name : ChatTemplate::builtin_names()) {
      const std::string file = "builtin-" + name;
      std::ofstream(dir.file(file + ".jinja")) << ChatTemplate::builtin(name).source();
      ref.sources[file] = ChatTemplate::builtin(name).source();
      ref.builtins.push_back(file);
    }
    for (const auto& e : fs::directory_iterator(fixtures)) {
      if (e.path().extension() == ".jinja") {
        ref.sources[e.path().stem().string()] = read_file(e.path().string());
      }
    }
    const fs::path cases = root / "tests/chat/conversations.json";
    ref.cases = Json::parse(read_file(cases.string()));
    const std::string cmd = "node " + test::quote((root / "tests/chat/render_reference.mjs").string()) +
                            " " + test::quote(cases.string()) + " " + test::quote(fixtures) + " " +
                            test::quote(dir.path().string());
    const std::string out = run_capture(cmd, &status);
    if (status != 0) {
      ref.skip = "the reference renderer failed (exit " + std::to_string(status) + ")";
      return ref;
    }
    ref.results = Json::parse(out);
    return ref;
  }();
  return r;
}

struct Outcome {
  bool ok = false;
  std::string text;
};

Outcome render_case(const ChatTemplate& t, const Json& spec, const Json& c) {
  ChatRenderOptions o;
  o.add_generation_prompt = c["add_generation_prompt"].get<bool>();
  o.bos_token = spec["bos_token"].get<std::string>();
  o.eos_token = spec["eos_token"].get<std::string>();
  o.now = spec["date"].get<std::string>();
  if (c.contains("tools")) o.tools = c["tools"];
  if (c.contains("vars")) o.extra_context = c["vars"];
  try {
    return {true, t.render(c["messages"], o)};
  } catch (const InvalidArgument& e) {
    return {false, e.what()};
  }
}

// Compares one template on every case; returns the failures, counts the matches.
std::vector<std::string> compare_template(const std::string& name, int* matched_cases,
                                          int* deviating_cases) {
  const Reference& ref = reference();
  std::vector<std::string> failures;
  const Json& expected = ref.results.at(name);
  std::optional<ChatTemplate> t;
  std::string parse_error;
  try {
    t.emplace(ChatTemplate::parse(ref.sources.at(name)));
  } catch (const FormatError& e) {
    parse_error = e.what();
  }
  const Deviation* dev = deviation_for(name);
  for (const Json& c : ref.cases["cases"]) {
    const std::string case_name = c["name"].get<std::string>();
    const Json& want = expected.at(case_name);
    const bool ref_ok = want.contains("text");
    Outcome got;
    if (t) {
      got = render_case(*t, ref.cases, c);
    } else {
      got = {false, parse_error};
    }
    if (ref_ok && got.ok && got.text == want["text"].get<std::string>()) {
      ++*matched_cases;
      continue;
    }
    if (!ref_ok && !got.ok) {
      ++*matched_cases;  // both refuse the conversation
      continue;
    }
    if (dev != nullptr && got.ok && (dev->reference_raises ? !ref_ok : ref_ok)) {
      ++*deviating_cases;
      continue;
    }
    std::string what;
    if (!got.ok) {
      what = "squeeze raised: " + got.text;
    } else if (!ref_ok) {
      what = "the reference raised (" + want["error"].get<std::string>() + ") but squeeze rendered";
    } else {
      const std::string& w = want["text"].get_ref<const std::string&>();
      size_t k = 0;
      while (k < w.size() && k < got.text.size() && w[k] == got.text[k]) ++k;
      const size_t from = k > 60 ? k - 60 : 0;
      what = "texts differ at byte " + std::to_string(k) + ":\n  reference: " +
             Json(w.substr(from, 120)).dump() + "\n  squeeze:   " +
             Json(got.text.substr(from, 120)).dump();
    }
    failures.push_back(name + " / " + case_name + ": " + what);
  }
  return failures;
}

TEST(ChatConformance, EveryFixtureTemplateRendersAsTheReference) {
  const Reference& ref = reference();
  if (!ref.skip.empty()) GTEST_SKIP() << ref.skip;
  int templates = 0, full = 0, cases = 0, deviations = 0;
  std::vector<std::string> failures;
  for (const auto& [name, source] : ref.sources) {
    if (name.rfind("builtin-", 0) == 0) continue;
    ASSERT_TRUE(ref.results.contains(name)) << name;
    ++templates;
    int matched = 0, deviating = 0;
    std::vector<std::string> f = compare_template(name, &matched, &deviating);
    cases += matched;
    deviations += deviating;
    if (f.empty() && deviating == 0) ++full;
    failures.insert(failures.end(), f.begin(), f.end());
  }
  const int per = static_cast<int>(ref.cases["cases"].size());
  std::printf("chat templates: %d of %d match the reference on every conversation; %d of %d "
              "(template, conversation) pairs match, %d are listed deviations\n",
              full, templates, cases, templates * per, deviations);
  EXPECT_GE(templates, 60);
  for (const std::string& f : failures) ADD_FAILURE() << f;
}

TEST(ChatConformance, BuiltinsRenderAsTheReference) {
  const Reference& ref = reference();
  if (!ref.skip.empty()) GTEST_SKIP() << ref.skip;
  for (const std::string& name : ref.builtins) {
    int matched = 0, deviating = 0;
    for (const std::string& f : compare_template(name, &matched, &deviating)) ADD_FAILURE() << f;
    EXPECT_EQ(matched, static_cast<int>(ref.cases["cases"].size())) << name;
  }
}

}  // namespace
}  // namespace sq
