// Stop strings over streamed text. Generated text arrives piece by piece (a token's bytes at a
// time); a stop string may straddle pieces, so text that could still turn out to be the start of a
// stop string is held back until it either completes one (and is dropped) or diverges (and is
// released).
//
// Matching is on bytes: stop strings may hold any UTF-8, and the matcher neither splits nor
// repairs characters. If the pushed bytes are valid UTF-8 as a whole and the stops are valid UTF-8,
// every emitted piece ends on a character boundary except where the input piece itself did.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace sq {

class StopMatcher {
 public:
  // Empty strings in `stops` are ignored; duplicates are harmless.
  explicit StopMatcher(std::vector<std::string> stops);

  struct Result {
    std::string emit;      // text safe to show now
    bool stopped = false;  // a stop string completed; `emit` ends right before it
  };

  // Feeds the next piece of generated text. Generation stops at the first stop string to complete
  // in the byte stream; among stops completing at the same byte, the longest (earliest starting)
  // wins. The result does not depend on how the text is cut into pieces. Once stopped, further
  // pushes return nothing and stay stopped.
  Result push(std::string_view text);

  // End of generation: releases whatever is held back (nothing if a stop was matched).
  std::string finish();

  bool stopped() const { return stopped_; }
  // Bytes currently held back.
  size_t held() const { return buffer_.size(); }
  // Forgets the held text and the stopped state, for the next generation.
  void reset();

 private:
  std::vector<std::string> stops_;
  size_t max_len_ = 0;
  std::string buffer_;  // held-back text; never contains a complete stop string
  bool stopped_ = false;
};

}  // namespace sq
