// UTF-8 helpers for the tokenizers, and GPT-2's byte-to-unicode table.
//
// Tokenizers must round-trip arbitrary bytes, so nothing here assumes valid input: every function
// says what it does with malformed sequences.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sq::utf8 {

// Length of the well-formed UTF-8 sequence that starts at s[pos] (1 to 4), or 0 when the bytes
// there are not one (stray continuation byte, overlong form, surrogate, beyond U+10FFFF, truncated).
size_t sequence_length(std::string_view s, size_t pos);

bool is_valid(std::string_view s);

// The code point of the well-formed sequence at s[pos]; `len` must be sequence_length(s, pos) > 0.
uint32_t decode_at(std::string_view s, size_t pos, size_t len);

void append(std::string& out, uint32_t cp);

// Number of bytes at the end of `s` that begin a well-formed sequence but stop before it ends
// (0 to 3). A streaming decoder holds these back until the rest of the character arrives.
size_t incomplete_tail(std::string_view s);

// `s` with every malformed byte replaced by U+FFFD, for outputs that must be valid UTF-8 (JSON).
std::string sanitize(std::string_view s);

}  // namespace sq::utf8

namespace sq::byte_level {

// GPT-2's reversible map from bytes to printable code points: printable Latin-1 bytes stand for
// themselves, the other 68 take U+0100 onwards in byte order. Each entry is that code point in UTF-8.
const std::array<std::string, 256>& byte_to_utf8();

// The byte that the single character `ch` (UTF-8) stands for, or -1 when `ch` is not in the map.
int utf8_to_byte(std::string_view ch);

}  // namespace sq::byte_level
