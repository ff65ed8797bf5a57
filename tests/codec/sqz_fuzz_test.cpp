// The .sqz reader and decoder on hostile bytes (DESIGN.md, invariant 5). The checksums turn away
// almost every damaged archive before decoding, so these tests also forge archives whose checksums
// are right but whose coded data is garbage: the decoder itself must then stop with an error,
// within its bounds. Part of the sanitizer build (tests/CMakeLists.txt).
#include <xxhash.h>

#include <cstring>
#include <stdexcept>
#include <map>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/rng.h"
#include "codec/sqz.h"
#include "engine/engine.h"
#include "support.h"

namespace sq::codec {
namespace {

void store64(std::string& s, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) s[at + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
}

// Where the parts of an archive are (docs/sqz-format.md), read independently of the reader.
struct Layout {
  size_t header_end = 0;   // the header checksum's offset
  size_t table_begin = 0, table_end = 0, payload_begin = 0;
};

// Throws std::out_of_range when the (possibly damaged) fields point outside the bytes.
Layout layout(const std::string& a) {
  Layout l;
  if (a.size() < 46) throw std::out_of_range("short");
  const size_t name_len = static_cast<uint8_t>(a[44]) | static_cast<size_t>(static_cast<uint8_t>(a[45])) << 8;
  l.header_end = 46 + name_len;
  l.table_begin = l.header_end + 8;
  uint32_t n_chunks = 0;
  std::memcpy(&n_chunks, a.data() + 40, 4);
  size_t at = l.table_begin;
  for (uint32_t c = 0; c < n_chunks; ++c) {
    for (int v = 0; v < 2; ++v) {
      while (at < a.size() && (static_cast<uint8_t>(a[at]) & 0x80)) ++at;
      ++at;
    }
    at += 4;
    if (at > a.size()) throw std::out_of_range("table");
  }
  l.table_end = at;
  l.payload_begin = at + 8;
  if (l.payload_begin > a.size()) throw std::out_of_range("table");
  return l;
}

// Recomputes both checksums so that the reader accepts the bytes as undamaged.
void reseal(std::string& a) {
  const Layout l = layout(a);
  store64(a, l.header_end, XXH3_64bits(a.data(), l.header_end));
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, a.data() + l.table_begin, l.table_end - l.table_begin);
  XXH3_64bits_update(st, a.data() + l.payload_begin, a.size() - l.payload_begin);
  store64(a, l.table_end, XXH3_64bits_digest(st));
  XXH3_freeState(st);
}

// Several chunks of 24 positions, so that the table and chunk boundaries are in play.
std::string small_zip(const Engine& e, const std::string& text) {
  ZipOptions o;
  o.chunk_tokens = 24;
  o.n_threads = 1;
  return zip(e, text, o);
}

TEST(SqzFuzz, ResealedArchiveStillDecodes) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  auto e = Engine::load({model, ""});
  const std::string text = "Lily and Ben went to the park. They saw a big dog.\nThe dog was happy.";
  std::string a = small_zip(*e, text);
  const std::string before = a;
  reseal(a);
  ASSERT_EQ(a, before) << "the test's idea of the layout disagrees with the writer";
  EXPECT_EQ(unzip(*e, a, {}), text);
}

TEST(SqzFuzz, GarbageCodedDataWithValidChecksumsIsAnError) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  auto e = Engine::load({model, ""});
  const std::string text = "Lily and Ben went to the park. They saw a big dog.\nThe dog was happy. \xff end";
  const std::string good = small_zip(*e, text);
  const Layout l = layout(good);
  ASSERT_LT(l.payload_begin, good.size());
  Rng rng(99);
  UnzipOptions uo;
  uo.n_threads = 1;
  int errors = 0, same = 0;
  for (int trial = 0; trial < 100; ++trial) {
    std::string a = good;
    const int flips = 1 + static_cast<int>(rng.next_u64() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = l.payload_begin + rng.next_u64() % (a.size() - l.payload_begin);
      a[at] = trial % 3 == 0 ? static_cast<char>(rng.next_u64()) : static_cast<char>(a[at] ^ (1 << (rng.next_u64() % 8)));
    }
    reseal(a);
    try {
      const std::string out = unzip(*e, a, uo);
      EXPECT_EQ(out, text) << "trial " << trial << " decoded other bytes without an error";
      ++same;
    } catch (const FormatError&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 80) << same << " garbled archives decoded to the original";
}

TEST(SqzFuzz, RandomHeadersAndTablesAreErrors) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  auto e = Engine::load({model, ""});
  const std::string good = small_zip(*e, "One day, a cat sat on a mat. It was a sunny day.");
  const Layout l = layout(good);
  Rng rng(4);
  for (int trial = 0; trial < 400; ++trial) {
    std::string a = good;
    // Damage the header fields or the table, then make the checksums agree.
    const size_t at = 4 + rng.next_u64() % (l.table_end - 4);
    if (at >= l.header_end && at < l.table_begin) continue;  // the header checksum itself
    a[at] = static_cast<char>(rng.next_u64());
    if (rng.next_u64() % 4 == 0) a.resize(l.payload_begin + rng.next_u64() % (a.size() - l.payload_begin + 1));
    try {
      reseal(a);
    } catch (...) {
      continue;
    }
    try {
      const std::string out = unzip(*e, a, {});
      EXPECT_EQ(out, "One day, a cat sat on a mat. It was a sunny day.");
    } catch (const FormatError&) {
    } catch (const InvalidArgument&) {
    }
  }
}

}  // namespace
}  // namespace sq::codec
