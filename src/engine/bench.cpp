#include "engine/bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <span>

#include "base/error.h"
#include "base/rng.h"
#include "kernels/repack.h"
#include "model/repack.h"
#include "base/thread_pool.h"
#include "kernels/isa.h"
#include "kernels/quant.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace sq {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

SpeedStats stats_of(int32_t n_tokens, const std::vector<double>& samples) {
  SpeedStats s;
  s.n_tokens = n_tokens;
  s.samples_tps = samples;
  if (samples.empty()) return s;
  double sum = 0;
  for (double v : samples) sum += v;
  s.mean_tps = sum / static_cast<double>(samples.size());
  if (samples.size() > 1) {
    double ss = 0;
    for (double v : samples) ss += (v - s.mean_tps) * (v - s.mean_tps);
    s.sd_tps = std::sqrt(ss / static_cast<double>(samples.size() - 1));
  }
  return s;
}

std::vector<int32_t> random_tokens(Rng& rng, int32_t n, int32_t n_vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(n_vocab));
  return ids;
}

uint64_t bytes_of(const TensorView& t) { return t.empty() ? 0 : static_cast<uint64_t>(t.n_bytes()); }

// One expert's share of a stacked expert tensor, times the experts a token uses.
uint64_t expert_bytes(const TensorView& t, const ModelConfig& c) {
  if (t.empty() || c.n_expert <= 0) return 0;
  return bytes_of(t) / static_cast<uint64_t>(c.n_expert) * static_cast<uint64_t>(c.n_expert_used);
}

std::string weight_type_of(const Model& m) {
  std::map<std::string, uint64_t> by_type;
  for (const auto& L : m.layers) {
    for (const TensorView* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down,
                                &L.ffn_gate_exps, &L.ffn_up_exps, &L.ffn_down_exps}) {
      if (!t->empty()) by_type[type_name(kernels::unpacked_type(t->type))] += bytes_of(*t);
    }
  }
  std::string best = m.layers.empty() ? type_name(kernels::unpacked_type(m.output.type)) : "";
  uint64_t most = 0;
  for (const auto& [name, bytes] : by_type) {
    if (bytes > most) best = name, most = bytes;
  }
  return best;
}

// Installs a product profile on this thread for a scope, and the previous one back at its end, also
// when the scope is left by an exception (none is installed for nullptr).
class ProfileScope {
 public:
  explicit ProfileScope(ops::ProductProfile* p) : active_(p != nullptr) {
    if (active_) previous_ = ops::set_product_profile(p);
  }
  ~ProfileScope() {
    if (active_) ops::set_product_profile(previous_);
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  bool active_;
  ops::ProductProfile* previous_ = nullptr;
};

nlohmann::json speed_json(const std::optional<SpeedStats>& s) {
  if (!s) return nullptr;
  return {{"n_tokens", s->n_tokens},
          {"mean_tps", s->mean_tps},
          {"sd_tps", s->sd_tps},
          {"samples_tps", s->samples_tps},
          {"alone_share", s->alone_share}};
}

}  // namespace

void check_bench_options(const ModelBenchOptions& o) {
  // Upper bounds keep a typo from allocating a KV cache of gigabytes before anything is measured.
  constexpr int32_t kMaxTokens = 1 << 16;
  if (o.n_prompt < 0 || o.n_prompt > kMaxTokens) {
    fail<InvalidArgument>("-p is {}; expected a prompt length from 0 (skip pp) to {} tokens",
                          o.n_prompt, kMaxTokens);
  }
  if (o.n_gen < 0 || o.n_gen > kMaxTokens) {
    fail<InvalidArgument>("-n is {}; expected a generation length from 0 (skip tg) to {} tokens",
                          o.n_gen, kMaxTokens);
  }
  if (o.repetitions < 1 || o.repetitions > 1000) {
    fail<InvalidArgument>("-r is {}; expected 1 to 1000 repetitions", o.repetitions);
  }
  if (o.n_prompt == 0 && o.n_gen == 0) {
    fail<InvalidArgument>("-p and -n are both 0: nothing to measure");
  }
}

double ModelBenchResult::implied_gbps() const {
  if (!tg) return 0;
  return static_cast<double>(weight_bytes_per_token) * tg->mean_tps / 1e9;
}

double ModelBenchResult::membw_fraction() const {
  if (!tg || !membw || membw->read_gbps <= 0) return 0;
  return implied_gbps() / membw->read_gbps;
}

uint64_t weight_bytes_per_token(const Model& m) {
  const ModelConfig& c = m.config;
  uint64_t total = 0;
  // One row of the embedding table; the output matrix in full (the whole table when tied).
  if (!m.tok_embd.empty()) total += static_cast<uint64_t>(m.tok_embd.row_size());
  total += bytes_of(m.output_norm) + bytes_of(m.output);
  for (const auto& L : m.layers) {
    for (const TensorView* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk, &L.bv,
                                &L.ffn_norm, &L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.ffn_gate_inp}) {
      total += bytes_of(*t);
    }
    total += expert_bytes(L.ffn_gate_exps, c) + expert_bytes(L.ffn_up_exps, c) +
             expert_bytes(L.ffn_down_exps, c);
  }
  return total;
}

uint64_t prompt_macs_per_token(const Model& m) {
  const ModelConfig& c = m.config;
  uint64_t total = 0;
  auto add = [&](const TensorView& t, double share) {
    if (!t.empty()) total += static_cast<uint64_t>(static_cast<double>(t.n_elements()) * share);
  };
  const double used = c.n_expert > 0 ? static_cast<double>(c.n_expert_used) / c.n_expert : 1.0;
  for (const auto& L : m.layers) {
    for (const TensorView* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down,
                                &L.ffn_gate_inp}) {
      add(*t, 1.0);
    }
    for (const TensorView* t : {&L.ffn_gate_exps, &L.ffn_up_exps, &L.ffn_down_exps}) add(*t, used);
  }
  return total;
}

double ModelBenchResult::pp_gops() const {
  return pp ? 2.0 * static_cast<double>(prompt_macs_per_token) * pp->mean_tps / 1e9 : 0.0;
}

double ModelBenchResult::peak_fraction() const {
  return pp && peak && peak->peak_gops > 0 ? pp_gops() / peak->peak_gops : 0.0;
}

ModelBenchResult bench_model(const Model& model, ThreadPool& pool, const ModelBenchOptions& o) {
  check_bench_options(o);
  const ModelConfig& c = model.config;
  ModelBenchResult r;
  r.model = model.name;
  r.path = model.path;
  r.weight_type = weight_type_of(model);
  r.file_size = model.file_size;
  r.n_params = model.n_params();
  r.threads = pool.size();
  r.isa = kernels_isa_name();
  r.repetitions = o.repetitions;
  r.weight_bytes_per_token = weight_bytes_per_token(model);
  r.prompt_macs_per_token = prompt_macs_per_token(model);
  r.repacked_tensors = model.repacked.tensors;
  r.repacked_bytes = model.repacked.bytes;

  Rng rng(o.seed);
  const std::vector<int32_t> prompt = random_tokens(rng, o.n_prompt, c.n_vocab);
  const std::vector<int32_t> gen = random_tokens(rng, o.n_gen, c.n_vocab);
  KvCache kv(c, std::max({o.n_prompt, o.n_gen, 1}));
  std::vector<float> logits(static_cast<size_t>(c.n_vocab));

  auto run_pp = [&] {
    kv.clear();
    const auto t0 = Clock::now();
    model.forward(prompt, 0, kv, pool, logits, false);
    return seconds_since(t0);
  };
  auto run_tg = [&](int32_t n) {
    kv.clear();
    const auto t0 = Clock::now();
    for (int32_t i = 0; i < n; ++i) {
      model.forward(std::span<const int32_t>(&gen[static_cast<size_t>(i)], 1), i, kv, pool, logits,
                    false);
    }
    return seconds_since(t0);
  };

  // Warm-up: faults the mapped weights in and lets the clocks settle. The first generated token
  // already reads every weight, so a short tg warm-up suffices.
  if (o.n_prompt > 0) run_pp();
  if (o.n_gen > 0) run_tg(std::min(o.n_gen, 16));

  // The bandwidth is measured before and after the repetitions and the best pass counts, so that
  // a quiet or busy spell of the shared machine weighs on both figures alike.
  MemBwOptions half = o.membw;
  half.passes = std::max(1, o.membw.passes / 2);
  if (o.measure_membw) r.membw = measure_memory_bandwidth(pool, half);

  std::vector<double> pp_tps, tg_tps;
  ops::ProductProfile profile;
  // The pool's balanced regions over the timed runs, and those it ran alone: {pp, tg}.
  int64_t regions[2] = {}, alone[2] = {};
  auto count_regions = [&](int test, const ThreadPool::Stats& before) {
    const ThreadPool::Stats after = pool.stats();
    regions[test] += after.balanced_regions - before.balanced_regions;
    alone[test] += after.alone_regions - before.alone_regions;
  };
  auto share = [&](int test) {
    return regions[test] > 0 ? static_cast<double>(alone[test]) / static_cast<double>(regions[test]) : 0.0;
  };
  for (int32_t rep = 0; rep < o.repetitions; ++rep) {
    if (o.n_prompt > 0) {
      const ThreadPool::Stats before = pool.stats();
      pp_tps.push_back(o.n_prompt / std::max(run_pp(), 1e-9));
      count_regions(0, before);
    }
    if (o.n_gen > 0) {
      double s = 0;
      {
        const ProfileScope scope(o.profile ? &profile : nullptr);
        const ThreadPool::Stats before = pool.stats();
        s = run_tg(o.n_gen);
        count_regions(1, before);
      }
      if (o.profile) r.profile_tg_seconds += s;
      tg_tps.push_back(o.n_gen / std::max(s, 1e-9));
    }
  }
  if (o.profile) r.profile = profile.entries();
  if (o.n_prompt > 0) {
    r.pp = stats_of(o.n_prompt, pp_tps);
    r.pp->alone_share = share(0);
  }
  if (o.measure_peak && o.n_prompt > 0) r.peak = measure_dot_peak(pool);
  if (o.n_gen > 0) {
    r.tg = stats_of(o.n_gen, tg_tps);
    r.tg->alone_share = share(1);
  }

  if (o.measure_membw) {
    MemBwResult after = measure_memory_bandwidth(pool, half);
    MemBwResult& m = *r.membw;
    m.pass_gbps.insert(m.pass_gbps.end(), after.pass_gbps.begin(), after.pass_gbps.end());
    std::vector<double> sorted = m.pass_gbps;
    std::sort(sorted.begin(), sorted.end());
    m.read_gbps = sorted.back();
    const size_t n = sorted.size();
    m.median_gbps = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  }
  return r;
}

std::string kernels_isa_name() { return std::string(kernels::isa_name(kernels::active_isa())); }

namespace {

// Runs `work(thread, iters)` (which returns the int8 multiply-adds it did) on every thread of the pool:
// doubles the iterations until a pass takes 20 ms, scales them to `pass_seconds`, then times
// `passes` passes; GOPS per pass, 2 ops per multiply-add, all threads together.
template <class Work>
std::vector<double> time_passes(ThreadPool& pool, const PeakOptions& o, Work&& work) {
  const int threads = pool.size();
  std::atomic<int64_t> macs{0};
  auto pass = [&](int64_t iters) {
    macs.store(0, std::memory_order_relaxed);
    const auto t0 = Clock::now();
    pool.parallel_for(threads, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) macs.fetch_add(work(t, iters), std::memory_order_relaxed);
    });
    return seconds_since(t0);
  };
  int64_t iters = 1;
  double s = pass(iters);
  while (s < 0.02 && iters < (int64_t{1} << 40)) {
    iters *= 2;
    s = pass(iters);
  }
  iters = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iters) * o.pass_seconds /
                                                    std::max(s, 1e-9)));
  std::vector<double> gops;
  for (int32_t p = 0; p < o.passes; ++p) {
    const double secs = pass(iters);
    gops.push_back(2.0 * static_cast<double>(macs.load()) / std::max(secs, 1e-9) / 1e9);
  }
  return gops;
}

// The instructions kernels::KernelTable::int8_peak runs in each variant.
const char* peak_instructions(kernels::Isa isa) {
  switch (isa) {
    case kernels::Isa::Avx512Vnni: return "vpdpbusd, 512-bit";
    case kernels::Isa::Avx512: return "vpmaddubsw + vpmaddwd + vpaddd, 512-bit";
    case kernels::Isa::Avx2: return "vpmaddubsw + vpmaddwd + vpaddd, 256-bit";
    case kernels::Isa::Ref: break;
  }
  return "scalar multiply-adds (the reference)";
}

}  // namespace

PeakResult measure_dot_peak(ThreadPool& pool, const PeakOptions& o) {
  if (o.row_elems <= 0 || o.row_elems % 32 != 0 || o.rows < 1 || o.passes < 1 ||
      !(o.pass_seconds > 0)) {
    fail<InvalidArgument>("peak: row of {} elements, {} rows, {} passes of {} s; expected a "
                          "positive multiple of 32 elements and positive counts",
                          o.row_elems, o.rows, o.passes, o.pass_seconds);
  }
  const int threads = pool.size();
  PeakResult r;
  r.threads = threads;
  r.isa = kernels_isa_name();
  r.instructions = peak_instructions(kernels::active_isa());

  // The instructions alone, on registers.
  const kernels::Int8PeakFn peak = kernels::active_table().int8_peak;
  std::atomic<uint32_t> sink{0};
  r.pass_gops = time_passes(pool, o, [&](int64_t, int64_t iters) {
    uint32_t checksum = 0;
    const int64_t macs = peak(iters * 4096, &checksum);
    sink.fetch_xor(checksum, std::memory_order_relaxed);
    return macs;
  });
  r.peak_gops = *std::max_element(r.pass_gops.begin(), r.pass_gops.end());

  // The Q8_0 tile, in the layout the loader gives Q8_0 matrices: packed where the kernels have a
  // packed layout.
  const GgmlType wtype = repack_enabled() ? *kernels::packed_type(GgmlType::Q8_0) : GgmlType::Q8_0;
  const size_t row_bytes = kernels::row_bytes(wtype, o.row_elems);
  const size_t act_bytes = kernels::row_bytes(kernels::vec_dot_type(wtype), o.row_elems);
  // Per thread: `rows` weight rows and as many tokens, written by that thread so they sit in its
  // own caches.
  struct Data {
    std::vector<uint8_t> w, x;
    std::vector<float> out;
  };
  std::vector<Data> data(static_cast<size_t>(threads));
  pool.parallel_for(threads, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      Rng rng(static_cast<uint64_t>(t) + 1);
      std::vector<float> f(static_cast<size_t>(o.row_elems));
      auto fill = [&] {
        for (auto& v : f) v = static_cast<float>(static_cast<int64_t>(rng.next_u64() % 2001) - 1000) / 1000.0f;
      };
      Data& d = data[static_cast<size_t>(t)];
      d.w.resize(row_bytes * static_cast<size_t>(o.rows));
      for (int32_t row = 0; row < o.rows; ++row) {
        fill();
        kernels::quantize_row(wtype, f.data(), d.w.data() + row_bytes * static_cast<size_t>(row), o.row_elems);
      }
      d.x.resize(act_bytes * static_cast<size_t>(o.rows));
      for (int32_t row = 0; row < o.rows; ++row) {
        fill();
        kernels::quantize_activation(kernels::vec_dot_type(GgmlType::Q8_0), f.data(),
                                     d.x.data() + act_bytes * static_cast<size_t>(row), o.row_elems);
      }
      d.out.resize(static_cast<size_t>(o.rows) * static_cast<size_t>(o.rows));
    }
  });
  std::atomic<float> out_sink{0};
  r.tile_pass_gops = time_passes(pool, o, [&](int64_t t, int64_t iters) {
    Data& d = data[static_cast<size_t>(t)];
    float acc = 0;
    for (int64_t it = 0; it < iters; ++it) {
      kernels::dot_tile_q(wtype, d.w.data(), row_bytes, o.rows, d.x.data(), act_bytes, o.rows,
                          o.row_elems, d.out.data(), o.rows);
      acc += d.out[static_cast<size_t>(it % o.rows)];
    }
    out_sink.store(acc, std::memory_order_relaxed);
    return iters * o.row_elems * o.rows * o.rows;
  });
  r.tile_gops = *std::max_element(r.tile_pass_gops.begin(), r.tile_pass_gops.end());
  r.tile_kernel = repack_enabled() && wtype != GgmlType::Q8_0 ? "Q8_0 tiled dot product, packed layout"
                                                              : "Q8_0 tiled dot product";
  return r;
}

nlohmann::json to_json(const ModelBenchResult& r) {
  nlohmann::json j;
  j["model"] = r.model;
  j["threads"] = r.threads;
  j["pp"] = speed_json(r.pp);
  j["tg"] = speed_json(r.tg);
  j["weight_bytes_per_token"] = r.weight_bytes_per_token;
  j["repacked_bytes"] = r.repacked_bytes;
  j["repacked_tensors"] = r.repacked_tensors;
  j["path"] = r.path;
  j["weight_type"] = r.weight_type;
  j["n_params"] = r.n_params;
  j["file_size"] = r.file_size;
  j["isa"] = r.isa;
  j["repetitions"] = r.repetitions;
  j["implied_gbps"] = r.tg ? nlohmann::json(r.implied_gbps()) : nlohmann::json(nullptr);
  j["membw_gbps"] = r.membw ? nlohmann::json(r.membw->read_gbps) : nlohmann::json(nullptr);
  j["membw_fraction"] =
      r.membw && r.tg ? nlohmann::json(r.membw_fraction()) : nlohmann::json(nullptr);
  j["pp_gops"] = r.pp ? nlohmann::json(r.pp_gops()) : nlohmann::json(nullptr);
  j["peak_gops"] = r.peak ? nlohmann::json(r.peak->peak_gops) : nlohmann::json(nullptr);
  j["peak_fraction"] = r.pp && r.peak ? nlohmann::json(r.peak_fraction()) : nlohmann::json(nullptr);
  if (r.profile_tg_seconds > 0) {
    nlohmann::json products = nlohmann::json::array();
    double in_products = 0;
    for (const ops::ProductTime& e : r.profile) {
      in_products += e.seconds;
      products.push_back({{"products", e.products},
                          {"calls", e.calls},
                          {"us_per_call", e.seconds / static_cast<double>(e.calls) * 1e6},
                          {"gbps", e.bytes / std::max(e.seconds, 1e-12) / 1e9},
                          {"share", e.seconds / r.profile_tg_seconds}});
    }
    j["profile"] = {{"tg_seconds", r.profile_tg_seconds},
                    {"products", products},
                    {"other_share", std::max(0.0, 1.0 - in_products / r.profile_tg_seconds)}};
  }
  return j;
}

nlohmann::json to_json(const MemBwResult& r) {
  return {{"read_gbps", r.read_gbps},     {"threads", r.threads},
          {"median_gbps", r.median_gbps}, {"pass_gbps", r.pass_gbps},
          {"buffer_bytes", r.buffer_bytes}, {"method", r.method}};
}

nlohmann::json to_json(const PeakResult& r) {
  return {{"peak_gops", r.peak_gops},
          {"threads", r.threads},
          {"isa", r.isa},
          {"pass_gops", r.pass_gops},
          {"instructions", r.instructions},
          {"tile_gops", r.tile_gops},
          {"tile_pass_gops", r.tile_pass_gops},
          {"tile_kernel", r.tile_kernel}};
}

}  // namespace sq
