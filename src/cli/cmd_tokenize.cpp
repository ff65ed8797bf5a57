// squeeze tokenize / detokenize. They need only the vocabulary: a GGUF file's tokenizer section
// (whatever its architecture, weights or none), or a llama2.c tokenizer file.
#include <cstdio>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/mmap.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "engine/vocab_loader.h"
#include "model/gguf.h"

namespace sq::cli {

namespace {

std::unique_ptr<Tokenizer> load_vocab(const ModelFlags& flags) {
  if (is_gguf_file(flags.model)) {
    GgufFile file = GgufFile::open(flags.model);
    auto tok = load_tokenizer(file);
    if (!tok) {
      fail<InvalidArgument>("{}: the file has no vocabulary (tokenizer.ggml.model is \"no_vocab\" or "
                            "absent)", flags.model);
    }
    return tok;
  }
  auto model = load_model(flags.model);
  std::string path = find_llama2c_tokenizer(flags.model, flags.tokenizer, model->config.n_vocab);
  return load_tokenizer_llama2c(path, model->config.n_vocab);
}

// Printable form of a piece: control bytes and invalid UTF-8 escaped, quotes kept readable.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out;
}

struct TokenizeFlags {
  ModelFlags model;
  std::string text;
  std::string file;
  bool json = false;
  bool bos = false;
  bool special = false;
  bool ids_only = false;
};

int tokenize(const TokenizeFlags& f) {
  if (!f.text.empty() && !f.file.empty()) {
    fail<InvalidArgument>("give the text as an argument or with -f FILE, not both");
  }
  const std::string text = f.file.empty() ? f.text : read_file(f.file);
  auto tok = load_vocab(f.model);
  std::vector<int32_t> ids = tok->encode(text, f.bos, f.special);
  if (f.json) {
    nlohmann::json j;
    j["ids"] = ids;
    fmt::print("{}\n", j.dump());
    return 0;
  }
  if (f.ids_only) {
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    fmt::print("{}\n", line);
    return 0;
  }
  for (int32_t id : ids) {
    fmt::print("{:>7} -> '{}'\n", id, printable(tok->token_bytes(id)));
  }
  return 0;
}

struct DetokenizeFlags {
  ModelFlags model;
  std::vector<std::string> ids;
};

int detokenize(const DetokenizeFlags& f) {
  auto tok = load_vocab(f.model);
  std::vector<int32_t> ids;
  for (const std::string& s : f.ids) {
    // Accept "1 2 3" as one argument too.
    size_t pos = 0;
    while (pos < s.size()) {
      while (pos < s.size() && (s[pos] == ' ' || s[pos] == ',' || s[pos] == '\n')) ++pos;
      if (pos >= s.size()) break;
      size_t end = pos;
      while (end < s.size() && s[end] != ' ' && s[end] != ',' && s[end] != '\n') ++end;
      const std::string word = s.substr(pos, end - pos);
      long long v = 0;
      size_t used = 0;
      try {
        v = std::stoll(word, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != word.size()) fail<InvalidArgument>("'{}' is not a token id", word);
      if (v < 0 || v >= tok->n_vocab()) {
        fail<InvalidArgument>("token id {} is out of range: the vocabulary has {} tokens", v,
                              tok->n_vocab());
      }
      ids.push_back(static_cast<int32_t>(v));
      pos = end;
    }
  }
  const std::string text = tok->decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (stdout_is_tty()) std::fputc('\n', stdout);
  return 0;
}

}  // namespace

Runner add_tokenize(CLI::App& app) {
  auto f = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Split text into token ids and pieces");
  add_model_flags(*cmd, f->model);
  cmd->add_option("text", f->text, "Text to tokenize");
  cmd->add_option("-f,--file", f->file, "Read the text from a file");
  cmd->add_flag("--json", f->json, "Print {\"ids\": [...]}");
  cmd->add_flag("--ids", f->ids_only, "Print the ids on one line");
  cmd->add_flag("--bos", f->bos, "Add the BOS token");
  cmd->add_flag("--special", f->special, "Parse special-token text (e.g. <|im_start|>) as special tokens");
  return [f] { return tokenize(*f); };
}

Runner add_detokenize(CLI::App& app) {
  auto f = std::make_shared<DetokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("detokenize", "Turn token ids back into text");
  add_model_flags(*cmd, f->model);
  cmd->add_option("ids", f->ids, "Token ids")->required();
  return [f] { return detokenize(*f); };
}

}  // namespace sq::cli
