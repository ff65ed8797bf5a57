// squeeze run: generate text from a prompt. The prompt and the generated text go to standard
// output as they are produced; logs and timings go to standard error.
#include <cstdio>
#include <random>

#include <fmt/core.h>

#include "base/error.h"
#include "base/mmap.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "engine/engine.h"

namespace sq::cli {

namespace {

struct RunFlags {
  ModelFlags model;
  std::string prompt;
  std::string prompt_file;
  int32_t n_predict = 128;
  int32_t threads = 0;
  int32_t ctx = 0;
  SamplingParams sampling;  // defaults are llama.cpp's
  int64_t seed = -1;
  std::vector<std::string> stop;
  bool no_bos = false;
  bool special = false;
  bool ignore_eos = false;
  bool no_prompt_echo = false;
  std::string kv_type = "f16";
};

int run(const RunFlags& f) {
  if (f.prompt.empty() == f.prompt_file.empty()) {
    fail<InvalidArgument>("give the prompt with exactly one of -p TEXT or -f FILE");
  }
  const std::string prompt = f.prompt_file.empty() ? f.prompt : read_file(f.prompt_file);
  auto engine = Engine::load({f.model.model, f.model.tokenizer});
  const Tokenizer& tok = engine->require_tokenizer();
  const bool add_bos = !f.no_bos && tok.add_bos_default();
  std::vector<int32_t> ids = tok.encode(prompt, add_bos, f.special);

  GenerateOptions o;
  o.n_predict = f.n_predict;
  o.n_ctx = f.ctx;
  o.kv_type = ops::parse_kv_type(f.kv_type);
  o.n_threads = f.threads > 0 ? f.threads : default_thread_count();
  o.sampling = f.sampling;
  o.sampling.seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed)
                                : static_cast<uint64_t>(std::random_device{}()) << 32 |
                                      std::random_device{}();
  o.stop = f.stop;
  o.stop_at_eog = !f.ignore_eos;

  check_request(*engine, ids, o);
  const Model& m = engine->model();
  fmt::print(stderr, "squeeze: {} ({}, {}, {:.2f} M parameters), {} threads, context {}, seed {}\n",
             m.path, m.config.arch, m.format, static_cast<double>(m.n_params()) / 1e6, o.n_threads,
             o.n_ctx > 0 ? o.n_ctx : default_context(m), o.sampling.seed);
  if (!f.no_prompt_echo) {
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    std::fflush(stdout);
  }
  GenerateResult r = generate(*engine, ids, o, [](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  if (stdout_is_tty()) std::fputc('\n', stdout);
  std::fflush(stdout);
  const double pp = r.prompt_seconds > 0 ? r.n_prompt / r.prompt_seconds : 0.0;
  const auto n_gen = static_cast<double>(r.tokens.size());
  const double tg = r.gen_seconds > 0 ? n_gen / r.gen_seconds : 0.0;
  fmt::print(stderr,
             "\nsqueeze: prompt {} tokens in {:.3f} s ({:.1f} tokens/s); generated {} tokens in {:.3f} "
             "s ({:.1f} tokens/s); finish: {}\n",
             r.n_prompt, r.prompt_seconds, pp, r.tokens.size(), r.gen_seconds, tg, r.finish_reason);
  return 0;
}

}  // namespace

Runner add_run(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt");
  add_model_flags(*cmd, f->model);
  cmd->add_option("-p,--prompt", f->prompt, "Prompt text");
  cmd->add_option("-f,--file", f->prompt_file, "Read the prompt from a file");
  cmd->add_option("-n,--n-predict", f->n_predict, "Number of tokens to generate (not counting the prompt)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  cmd->add_option("-c,--ctx-size", f->ctx, "Context length (default: the model's, at most 4096)");
  cmd->add_option("--temp", f->sampling.temperature, "Temperature; 0 means greedy")->capture_default_str();
  cmd->add_option("--top-k", f->sampling.top_k, "Keep the k most likely tokens; 0 disables")->capture_default_str();
  cmd->add_option("--top-p", f->sampling.top_p, "Nucleus sampling threshold; 1 disables")->capture_default_str();
  cmd->add_option("--min-p", f->sampling.min_p, "Drop tokens below min-p times the best one; 0 disables")
      ->capture_default_str();
  cmd->add_option("--repeat-penalty", f->sampling.repeat_penalty, "Penalty for repeated tokens; 1 disables")
      ->capture_default_str();
  cmd->add_option("--repeat-last-n", f->sampling.repeat_last_n, "Window of the penalties; -1 all, 0 disables")
      ->capture_default_str();
  cmd->add_option("--presence-penalty", f->sampling.presence_penalty, "OpenAI presence penalty")->capture_default_str();
  cmd->add_option("--frequency-penalty", f->sampling.frequency_penalty, "OpenAI frequency penalty")
      ->capture_default_str();
  cmd->add_option("-s,--seed", f->seed, "Random seed (default: random)");
  cmd->add_option("--stop", f->stop, "Stop when this text is generated (repeatable)")->allow_extra_args(false);
  cmd->add_flag("--no-bos", f->no_bos, "Do not add the BOS token before the prompt");
  cmd->add_flag("--special", f->special, "Parse special-token text in the prompt as special tokens");
  cmd->add_flag("--ignore-eos", f->ignore_eos, "Keep generating past end-of-generation tokens");
  add_kv_type_flag(*cmd, f->kv_type);
  cmd->add_flag("--no-echo", f->no_prompt_echo, "Do not print the prompt before the generated text");
  return [f] { return run(*f); };
}

}  // namespace sq::cli
