// Helpers shared by the tokenizer tests: fixture vocabularies (loaded once per process) and random
// text.
#pragma once

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/vocab_loader.h"
#include "model/gguf.h"
#include "support.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace sq::test {

// The fixture vocabulary `ggml-vocab-<name>.gguf`, or nullptr when the shared folder is missing.
inline const Tokenizer* fixture_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second.get();
  const std::string path = shared_path("fixtures/tokenizer/ggml-vocab-" + name + ".gguf");
  if (path.empty()) return nullptr;
  GgufFile file = GgufFile::open(path);
  auto tok = load_tokenizer(file);
  const Tokenizer* raw = tok.get();
  cache.emplace(name, std::move(tok));
  return raw;
}

// Random valid UTF-8 drawn from pools that stress tokenizers: ASCII, white space runs and newlines,
// Latin-1, Cyrillic, CJK, Hangul, emoji (4 bytes), combining marks, ZWJ sequences.
inline std::string random_utf8(std::mt19937& rng, size_t n_chars, bool allow_space_mark = false) {
  static const std::vector<std::vector<uint32_t>> pools = {
      {' ', ' ', ' ', '\t', '\n', '\n', '\r', 0x0B, 0x0C},
      {},  // printable ASCII, filled below
      {0xA0, 0xA9, 0xB5, 0xBD, 0xC4, 0xD6, 0xE9, 0xF5, 0xFF, 0x101, 0x153},
      {0x410, 0x439, 0x44F, 0x3B1, 0x3C9, 0x5D0, 0x627, 0x915, 0x0E01, 0x1780},
      {0x4E00, 0x4F60, 0x597D, 0x6211, 0x60F3, 0x5728, 0x5DE5, 0x4F5C, 0x3042, 0x30A2, 0xAC00, 0xD55C, 0x3000, 0xFF01},
      {0x1F600, 0x1F680, 0x1F999, 0x1F44D, 0x2705, 0x2764, 0xFE0F, 0x200D, 0x1F32B, 0x10400},
      {0x0301, 0x0308, 0x200B, 0x2028, 0x2026, 0x2019, 0x201C, 0x2581, 0x2585, 0xFFFD},
  };
  std::string out;
  std::uniform_int_distribution<size_t> pick_pool(0, pools.size() - 1);
  std::uniform_int_distribution<int> ascii(0x20, 0x7E);
  while (n_chars > 0) {
    const size_t p = pick_pool(rng);
    uint32_t cp;
    if (p == 1) {
      cp = static_cast<uint32_t>(ascii(rng));
    } else {
      std::uniform_int_distribution<size_t> pick(0, pools[p].size() - 1);
      cp = pools[p][pick(rng)];
    }
    if (cp == 0x2581 && !allow_space_mark) continue;
    // Runs: repeat the character a few times now and then.
    const int repeat = (rng() % 8 == 0) ? 1 + static_cast<int>(rng() % 5) : 1;
    for (int r = 0; r < repeat && n_chars > 0; ++r, --n_chars) utf8::append(out, cp);
  }
  return out;
}

}  // namespace sq::test
