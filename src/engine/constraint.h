// Constrained decoding: a constraint decides, before each token is drawn, which tokens may come
// next, so that the output always stays a prefix of something valid (a JSON value that follows a
// schema, for instance). The sampler never sees the banned tokens.
#pragma once

#include <cstdint>
#include <span>

namespace sq {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;

  // Sets to -inf the logit of every token that may not come next. End-of-generation tokens are
  // allowed exactly when the text so far is complete (complete() is true). Never leaves every
  // token banned while the output is incomplete, unless the vocabulary cannot continue it at all.
  virtual void apply(std::span<float> logits) = 0;

  // Records the token that was drawn (one that apply() allowed).
  virtual void accept(int32_t token) = 0;

  // The text accepted so far is a complete value: the generation may end here.
  virtual bool complete() const = 0;

  // No token can extend the text any more (a closed top-level value): generation must end now.
  virtual bool finished() const = 0;
};

}  // namespace sq
