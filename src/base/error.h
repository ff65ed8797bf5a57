// Typed errors raised at input boundaries (DESIGN.md, invariant 6). Each message says what was
// wrong, the value seen and the value expected; the command line prints it on one line, the server
// turns it into an OpenAI-style error.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace sq {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A file or stream whose bytes do not follow the format they claim (GGUF, llama2.c, tokenizer).
class FormatError : public Error {
 public:
  using Error::Error;
};

// The operating system refused: a file that does not exist, cannot be read or mapped.
class IoError : public Error {
 public:
  using Error::Error;
};

// Well-formed input that squeeze does not handle: a tensor type, an architecture, a tokenizer.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

// A request that contradicts itself or the model: bad flag values, a prompt longer than the context.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

template <typename E = Error, typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw E(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace sq
