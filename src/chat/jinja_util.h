// Text helpers of the template interpreter: UTF-8 and numbers written as JavaScript writes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sq::jinja {

// The code point at byte `k` and its length in bytes; invalid UTF-8 reads as U+FFFD, one byte.
uint32_t utf8_decode(const std::string& s, size_t k, size_t* len);
void utf8_append(std::string& out, uint32_t cp);
// The number of code points of `s`.
size_t utf8_length(const std::string& s);
// The characters (code points, as UTF-8 strings) of `s`; InvalidArgument past 1 MiB.
std::vector<std::string> utf8_chars(const std::string& s);

// Number.prototype.toString: the shortest text that reads back as `x`, in JavaScript's layout.
std::string js_number(double x);
// How the reference prints a float: 1.0, -0.0, 0.5.
std::string float_display(double x);

struct Value;
// How `~` and string `+` write a value (a float as JavaScript does: 1.0 is "1").
std::string concat_display(const Value& v);

}  // namespace sq::jinja
