// squeeze logits: run token ids as one batch from position 0 and write float32 logits for every
// position: the hook for checking squeeze against other engines.
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"
#include "base/mmap.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "model/kv_cache.h"

namespace sq::cli {

namespace {

struct LogitsFlags {
  ModelFlags model;
  std::string tokens;
  std::string out;
  int32_t threads = 0;
  int32_t ctx = 0;
  std::string kv_type = "f16";
};

int logits(const LogitsFlags& f) {
  const std::string bytes = read_file(f.tokens);
  if (bytes.empty() || bytes.size() % 4 != 0) {
    fail<InvalidArgument>("{}: {} bytes; expected a non-empty sequence of int32 token ids (a multiple "
                          "of 4 bytes)", f.tokens, bytes.size());
  }
  std::vector<int32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), bytes.size());
  auto model = load_model(f.model.model);
  const ModelConfig& c = model->config;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= c.n_vocab) {
      fail<InvalidArgument>("{}: token {} (at index {}) is out of range: the vocabulary has {} tokens",
                            f.tokens, ids[i], i, c.n_vocab);
    }
  }
  const auto n = static_cast<int32_t>(ids.size());
  const int32_t n_ctx = f.ctx > 0 ? f.ctx : std::max(n, default_context(*model));
  if (n > n_ctx) {
    fail<InvalidArgument>("{} tokens do not fit the context of {} (raise -c)", n, n_ctx);
  }
  ThreadPool pool(f.threads > 0 ? f.threads : default_thread_count());
  KvCache kv(c, n, ops::parse_kv_type(f.kv_type));
  std::vector<float> out(static_cast<size_t>(n) * static_cast<size_t>(c.n_vocab));
  model->forward(ids, 0, kv, pool, out, true);
  write_file_atomic(f.out, out.data(), out.size() * sizeof(float));
  fmt::print(stderr, "squeeze: wrote {} x {} float32 logits to {}\n", n, c.n_vocab, f.out);
  return 0;
}

}  // namespace

Runner add_logits(CLI::App& app) {
  auto f = std::make_shared<LogitsFlags>();
  CLI::App* cmd = app.add_subcommand("logits", "Write the logits of every position of a token sequence");
  add_model_flags(*cmd, f->model);
  cmd->add_option("--tokens", f->tokens, "int32 little-endian token ids (no BOS is added)")->required();
  cmd->add_option("-o,--output", f->out, "Output file: float32 [n_tokens x n_vocab], row-major")->required();
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  cmd->add_option("-c,--ctx-size", f->ctx, "Context length (default: enough for the tokens)");
  add_kv_type_flag(*cmd, f->kv_type);
  return [f] { return logits(*f); };
}

}  // namespace sq::cli
