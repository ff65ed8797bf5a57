#include "tokenizer/unicode.h"

#include <vector>

namespace sq::utf8 {
namespace {

bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

// Expected length from the lead byte, 0 for a byte that cannot start a sequence.
size_t lead_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether `c` may follow `lead` as the second byte (rules out overlongs, surrogates, > U+10FFFF).
bool second_ok(unsigned char lead, unsigned char c) {
  switch (lead) {
    case 0xE0: return c >= 0xA0 && c <= 0xBF;
    case 0xED: return c >= 0x80 && c <= 0x9F;
    case 0xF0: return c >= 0x90 && c <= 0xBF;
    case 0xF4: return c >= 0x80 && c <= 0x8F;
    default: return is_cont(c);
  }
}

}  // namespace

size_t sequence_length(std::string_view s, size_t pos) {
  if (pos >= s.size()) return 0;
  const auto lead = static_cast<unsigned char>(s[pos]);
  const size_t len = lead_length(lead);
  if (len <= 1) return len;
  if (pos + len > s.size()) return 0;
  if (!second_ok(lead, static_cast<unsigned char>(s[pos + 1]))) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (!is_cont(static_cast<unsigned char>(s[pos + k]))) return 0;
  }
  return len;
}

bool is_valid(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    const size_t len = sequence_length(s, pos);
    if (len == 0) return false;
    pos += len;
  }
  return true;
}

uint32_t decode_at(std::string_view s, size_t pos, size_t len) {
  const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[pos + k])); };
  switch (len) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t incomplete_tail(std::string_view s) {
  // The lead byte of an unfinished character is at most 3 bytes from the end.
  const size_t n = s.size();
  for (size_t tail = 1; tail <= 3 && tail <= n; ++tail) {
    const auto c = static_cast<unsigned char>(s[n - tail]);
    if (is_cont(c)) continue;
    const size_t len = lead_length(c);
    if (len <= tail) return 0;  // ASCII, invalid lead, or a complete (or overlong) sequence
    if (tail >= 2 && !second_ok(c, static_cast<unsigned char>(s[n - tail + 1]))) return 0;
    return tail;  // later bytes were checked as continuation bytes by the loop
  }
  return 0;
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const size_t len = sequence_length(s, pos);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      ++pos;
    } else {
      out.append(s.substr(pos, len));
      pos += len;
    }
  }
  return out;
}

}  // namespace sq::utf8

namespace sq::byte_level {
namespace {

struct Tables {
  std::array<std::string, 256> to_utf8;
  std::vector<int16_t> from_cp;  // indexed by code point, -1 where unmapped

  Tables() : from_cp(0x200, -1) {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : next++;
      utf8::append(to_utf8[b], cp);
      from_cp[cp] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_to_utf8() { return tables().to_utf8; }

int utf8_to_byte(std::string_view ch) {
  const size_t len = utf8::sequence_length(ch, 0);
  if (len == 0 || len != ch.size()) return -1;
  const uint32_t cp = utf8::decode_at(ch, 0, len);
  const auto& from = tables().from_cp;
  return cp < from.size() ? from[cp] : -1;
}

}  // namespace sq::byte_level
