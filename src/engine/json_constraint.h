// Structured output: the OpenAI `response_format` ({"type": "json_object"} and
// {"type": "json_schema", ...}) enforced while sampling. The schema is compiled once into a small
// grammar; each generated choice runs a byte-level pushdown automaton over it, and before every
// token the vocabulary (a trie of all token byte strings, shared by every choice) is walked with
// the automaton so that every token whose bytes cannot continue the output is banned. What comes
// out parses as JSON and validates against the schema; see docs/structured-output.md for what is
// supported, what is refused and the whitespace policy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/constraint.h"

namespace sq {

class Tokenizer;

// schema: the JSON Schema object of {"type":"json_schema","json_schema":{"schema":...}}, or null
// for
// {"type":"json_object"} (any JSON object). Throws InvalidArgument naming the schema path of
// anything unsupported or invalid (e.g. "schema.properties.age.type: 'decimal' is not a JSON Schema
// type"). The factory keeps no reference to `tokenizer` or `schema`: it copies what it needs (the
// compiled grammar and the vocabulary trie), shares it between the constraints it makes, and may be
// called from any thread. Each call returns a fresh constraint for one generated choice (cheap: a
// few allocations, no work per vocabulary entry).
std::function<std::unique_ptr<TokenConstraint>()> make_json_constraint_factory(
    const Tokenizer& tokenizer, const nlohmann::ordered_json& schema);

// The same automaton on plain text, without a tokenizer (tests, diagnostics): whether `text` is a
// prefix that the constraint for `schema` would let through, and whether it is complete. Throws as
// make_json_constraint_factory does.
struct JsonPrefixCheck {
  bool valid_prefix = false;  // every byte was allowed
  bool complete = false;      // the text is a whole value the schema accepts
  size_t accepted = 0;        // bytes accepted before the first refused one
};
JsonPrefixCheck check_json_prefix(const nlohmann::ordered_json& schema, const std::string& text);
// The same for many texts, compiling the schema once.
std::vector<JsonPrefixCheck> check_json_prefixes(const nlohmann::ordered_json& schema,
                                                 const std::vector<std::string>& texts);

}  // namespace sq
