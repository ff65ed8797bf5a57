// squeeze bench: llama-bench's figures (pp512, tg128 in tokens/s, mean ± sd) for a model, with the
// weight bytes a generated token reads and the share of the measured memory bandwidth that
// generation reaches; --membw and --peak measure the machine alone. A table goes to standard
// output, or with --json exactly one JSON object.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/membw.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "engine/bench.h"
#include "model/model.h"

namespace sq::cli {

namespace {

struct BenchFlags {
  std::string model;
  int32_t n_prompt = 512;
  int32_t n_gen = 128;
  int32_t threads = 0;
  int32_t repetitions = 5;
  bool json = false;
  bool membw = false;
  bool peak = false;
  bool profile = false;
  int64_t membw_mib = 1024;
};

// A Markdown table like llama-bench's: numbers right-aligned.
void print_table(const std::vector<std::string>& header, const std::vector<bool>& right,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) {
    width[c] = header[c].size();
    for (const auto& r : rows) width[c] = std::max(width[c], r[c].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s = "|";
    for (size_t c = 0; c < cells.size(); ++c) {
      s += right[c] ? fmt::format(" {:>{}} |", cells[c], width[c])
                    : fmt::format(" {:<{}} |", cells[c], width[c]);
    }
    fmt::print("{}\n", s);
  };
  line(header);
  std::string rule = "|";
  for (size_t c = 0; c < header.size(); ++c) {
    rule += " " + std::string(width[c] - (right[c] ? 1 : 0), '-') + (right[c] ? ":" : "") + " |";
  }
  fmt::print("{}\n", rule);
  for (const auto& r : rows) line(r);
}

std::string mib(uint64_t bytes) { return fmt::format("{:.2f} MiB", static_cast<double>(bytes) / (1 << 20)); }

int bench_membw(const BenchFlags& f, ThreadPool& pool) {
  MemBwOptions o;
  o.buffer_bytes = static_cast<size_t>(f.membw_mib) << 20;
  MemBwResult r = measure_memory_bandwidth(pool, o);
  if (f.json) {
    fmt::print("{}\n", to_json(r).dump());
    return 0;
  }
  std::string passes;
  for (double g : r.pass_gbps) passes += fmt::format("{}{:.1f}", passes.empty() ? "" : ", ", g);
  fmt::print("memory read bandwidth ({} threads, {} reads of {}): {:.1f} GB/s best, {:.1f} GB/s "
             "median (passes: {})\n",
             r.threads, r.method, mib(r.buffer_bytes), r.read_gbps, r.median_gbps, passes);
  return 0;
}

int bench_peak(const BenchFlags& f, ThreadPool& pool) {
  PeakResult r = measure_dot_peak(pool);
  if (f.json) {
    fmt::print("{}\n", to_json(r).dump());
    return 0;
  }
  auto list = [](const std::vector<double>& v) {
    std::string s;
    for (double g : v) s += fmt::format("{}{:.1f}", s.empty() ? "" : ", ", g);
    return s;
  };
  fmt::print("int8 multiply-add peak (the kernels' instructions on registers: {}; isa {}, {} "
             "threads): {:.1f} GOPS (2 ops per multiply-add; passes: {})\n",
             r.instructions, r.isa, r.threads, r.peak_gops, list(r.pass_gops));
  fmt::print("{} on cache-resident data: {:.1f} GOPS, {:.1f} % of the peak (passes: {})\n",
             r.tile_kernel, r.tile_gops, r.peak_gops > 0 ? 100.0 * r.tile_gops / r.peak_gops : 0.0,
             list(r.tile_pass_gops));
  return 0;
}

int bench_model_cmd(const BenchFlags& f, ThreadPool& pool) {
  ModelBenchOptions o;
  o.n_prompt = f.n_prompt;
  o.n_gen = f.n_gen;
  o.repetitions = f.repetitions;
  o.membw.buffer_bytes = static_cast<size_t>(f.membw_mib) << 20;
  o.profile = f.profile;
  check_bench_options(o);  // before the model loads: a bad flag fails fast
  if (f.profile && f.n_gen == 0) {
    fail<InvalidArgument>("--profile times the products of generated tokens, and -n is 0; give -n 1 or more");
  }
  auto model = load_model(f.model);
  ModelBenchResult r = bench_model(*model, pool, o);
  if (f.json) {
    fmt::print("{}\n", to_json(r).dump());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  auto add = [&](const char* test, const SpeedStats& s) {
    rows.push_back({fmt::format("{} {}", r.model, r.weight_type), mib(r.file_size),
                    fmt::format("{:.2f} M", static_cast<double>(r.n_params) / 1e6), r.isa,
                    std::to_string(r.threads), fmt::format("{}{}", test, s.n_tokens),
                    fmt::format("{:.2f} ± {:.2f}", s.mean_tps, s.sd_tps)});
  };
  if (r.pp) add("pp", *r.pp);
  if (r.tg) add("tg", *r.tg);
  print_table({"model", "size", "params", "isa", "threads", "test", "t/s"},
              {false, true, true, false, true, true, true}, rows);
  fmt::print("\nweights read per generated token: {} ({} bytes)\n", mib(r.weight_bytes_per_token),
             r.weight_bytes_per_token);
  if (r.repacked_tensors > 0) {
    fmt::print("repacked at load for the kernels: {} matrices, {} of anonymous memory (the mapped "
               "originals released; SQUEEZE_REPACK=0 keeps them)\n", r.repacked_tensors, mib(r.repacked_bytes));
  }
  if (r.tg && r.membw) {
    fmt::print("tg{} reads weights at {:.2f} GB/s; measured memory read bandwidth ({} threads, same "
               "run): {:.2f} GB/s best, {:.2f} GB/s median; tg{} reaches {:.1f} % of it\n",
               r.tg->n_tokens, r.implied_gbps(), r.membw->threads, r.membw->read_gbps,
               r.membw->median_gbps, r.tg->n_tokens, 100.0 * r.membw_fraction());
  }
  if (r.pp && r.peak) {
    fmt::print("pp{} computes {:.1f} GOPS of matrix products; the int8 multiply-add peak of the "
               "kernels' instructions (same run): {:.1f} GOPS; pp{} reaches {:.1f} % of it\n",
               r.pp->n_tokens, r.pp_gops(), r.peak->peak_gops, r.pp->n_tokens, 100.0 * r.peak_fraction());
  }
  for (const auto* s : {&r.pp, &r.tg}) {
    if (!*s || (*s)->alone_share <= 0) continue;
    fmt::print("{}{}: the thread pool ran {:.1f} % of its parallel regions on the calling thread alone, "
               "having found its workers slower than that thread (other work on the CPUs?)\n",
               s == &r.pp ? "pp" : "tg", (*s)->n_tokens, 100.0 * (*s)->alone_share);
  }
  fmt::print("mean ± sd over {} repetitions after one warm-up\n", r.repetitions);
  if (r.profile_tg_seconds > 0) {
    // Bandwidth: the products' weight bytes over their time; share: of the timed tg runs.
    std::vector<std::vector<std::string>> prows;
    double in_products = 0;
    for (const ops::ProductTime& e : r.profile) {
      in_products += e.seconds;
      prows.push_back({e.products, std::to_string(e.calls),
                       fmt::format("{:.1f}", e.seconds / static_cast<double>(e.calls) * 1e6),
                       fmt::format("{:.1f}", e.bytes / std::max(e.seconds, 1e-12) / 1e9),
                       fmt::format("{:.1f} %", 100.0 * e.seconds / r.profile_tg_seconds)});
    }
    fmt::print("\nwhere tg's time goes (the one-token matrix products and attention, each timed over its "
               "parallel region):\n\n");
    print_table({"products (type n_in x n_out)", "calls", "µs/call", "GB/s", "share"},
                {false, true, true, true, true}, prows);
    fmt::print("\noutside them (norms, RoPE, SwiGLU, the activations' rounding, the waits between "
               "regions): {:.1f} % of tg's time\n",
               100.0 * std::max(0.0, 1.0 - in_products / r.profile_tg_seconds));
  }
  return 0;
}

int run(const BenchFlags& f) {
  const int modes = (f.model.empty() ? 0 : 1) + (f.membw ? 1 : 0) + (f.peak ? 1 : 0);
  if (modes != 1) {
    fail<InvalidArgument>("bench measures one thing at a time: give exactly one of -m MODEL, "
                          "--membw or --peak (got {})",
                          modes);
  }
  if (f.threads < 0 || f.threads > 1024) {
    fail<InvalidArgument>("-t is {}; expected 1 to 1024 threads (0 or none: physical cores)",
                          f.threads);
  }
  if (f.membw_mib < 1 || f.membw_mib > (int64_t{1} << 20)) {
    fail<InvalidArgument>("--membw-mib is {}; expected 1 to 1048576 MiB", f.membw_mib);
  }
  ThreadPool pool(f.threads > 0 ? f.threads : default_thread_count());
  if (f.membw) return bench_membw(f, pool);
  if (f.peak) return bench_peak(f, pool);
  return bench_model_cmd(f, pool);
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Measure prompt and generation speed (pp/tg, tokens/s), memory bandwidth or int8 peak");
  cmd->add_option("-m,--model", f->model, "Model file: GGUF, or a llama2.c checkpoint (.bin)");
  cmd->add_option("-p,--n-prompt", f->n_prompt, "Prompt tokens processed in one batch (pp); 0 skips")
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", f->n_gen, "Tokens generated one at a time (tg); 0 skips")
      ->capture_default_str();
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  cmd->add_option("-r,--repetitions", f->repetitions, "Timed repetitions of each test")
      ->capture_default_str();
  cmd->add_flag("--json", f->json, "Print one JSON object instead of the table");
  cmd->add_flag("--profile", f->profile,
                "Also time every matrix product and attention of the generated tokens and show where "
                "tg's time goes (bandwidth and share of each)");
  cmd->footer(
      "Environment: SQUEEZE_ISA=ref|avx2|avx512|avx512vnni forces the kernels' instruction set;\n"
      "SQUEEZE_REPACK=0 keeps Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K matrices in the file's layout instead\n"
      "of repacking them at load (the 512-bit kernels' packed layouts), to compare the two.");
  cmd->add_flag("--membw", f->membw, "Measure the memory read bandwidth (no model)");
  cmd->add_flag("--peak", f->peak, "Measure the int8 multiply-add peak of the kernels' instructions, and their Q8_0 tile's rate (no model)");
  cmd->add_option("--membw-mib", f->membw_mib, "Buffer of the bandwidth measurement, MiB")
      ->capture_default_str();
  return [f] { return run(*f); };
}

}  // namespace sq::cli
