// squeeze eval: how well models compress text, measured in the same run as the classic compressors.
// For each corpus file and model: bits per byte, bits per character, bits per token, perplexity and
// tokens/s (a sliding window over the whole file, src/eval/score.h); beside them the sizes gzip -9,
// bzip2 -9, xz -9, zstd -19 and brotli -11 reach on the same bytes; with --sqz the real .sqz
// archive. --kl-base A compares models with A position by position instead (KL, top-1 agreement).
// A table goes to standard output, or with --json one JSON object; --svg draws the bar chart.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/mmap.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "codec/baselines.h"
#include "codec/sqz.h"
#include "engine/engine.h"
#include "eval/chart.h"
#include "eval/score.h"
#include "tokenizer/unicode.h"

namespace sq::cli {

namespace {

struct EvalFlags {
  std::vector<std::string> models;
  std::string tokenizer;
  std::vector<std::string> inputs;
  int32_t ctx = 0;
  int32_t stride = 0;
  int32_t threads = 0;
  std::string kv_type = "f16";
  bool json = false;
  std::string svg;
  bool sqz = false;
  std::string kl_base;
  bool no_baselines = false;
};

struct SqzFigures {
  uint64_t archive_bytes = 0;
  uint64_t payload_bytes = 0;
  uint64_t chunks = 0;
  uint64_t segments = 0;
  uint64_t tokens = 0;
  int32_t chunk_tokens = 0;
  double model_bits = 0;
  double segment_bits = 0;
  double seconds = 0;
  double bits_per_byte = 0;
  double archive_overhead_pct = 0;  // archive bits over the model's cross-entropy, in %
  double payload_overhead_pct = 0;  // range-coded payload bits over it, in %
};

struct ModelRow {
  size_t model = 0;  // index into the loaded models
  eval::ScoreResult score;
  std::optional<SqzFigures> sqz;
};

struct FileRow {
  std::string path;
  eval::TextCounts counts;
  std::vector<codec::BaselineResult> baselines;
  std::vector<ModelRow> models;
};

struct KlRow {
  size_t model = 0;
  eval::KlResult result;
};

struct KlFile {
  std::string path;
  eval::TextCounts counts;
  std::vector<KlRow> rows;
};

// The files named on the command line, directories replaced by their regular files (not
// descending into subdirectories), sorted by name.
std::vector<std::string> expand_inputs(const std::vector<std::string>& args) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const std::string& arg : args) {
    std::error_code ec;
    const fs::file_status st = fs::status(arg, ec);
    if (st.type() == fs::file_type::not_found) fail<IoError>("{}: does not exist", arg);
    if (ec) fail<IoError>("{}: cannot be read: {}", arg, ec.message());
    if (fs::is_regular_file(st)) {
      out.push_back(arg);
      continue;
    }
    if (!fs::is_directory(st)) fail<InvalidArgument>("{}: not a regular file or a directory", arg);
    std::vector<std::string> found;
    fs::directory_iterator it(arg, ec);
    if (ec) fail<IoError>("{}: cannot read the directory: {}", arg, ec.message());
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      if (ec) fail<IoError>("{}: cannot read the directory: {}", arg, ec.message());
      std::error_code fec;
      if (it->is_regular_file(fec)) found.push_back(it->path().string());
    }
    if (ec) fail<IoError>("{}: cannot read the directory: {}", arg, ec.message());
    if (found.empty()) fail<InvalidArgument>("{}: the directory has no regular files to evaluate", arg);
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  if (out.empty()) fail<InvalidArgument>("no files to evaluate: name files or directories after the flags");
  return out;
}

std::unique_ptr<Engine> load_engine(const std::string& path, const std::string& tokenizer) {
  auto e = Engine::load({path, tokenizer});
  e->require_tokenizer();
  return e;
}

// A status line on a terminal while the work goes on; nothing otherwise.
class Status {
 public:
  Status() : tty_(::isatty(STDERR_FILENO) == 1) {}
  ~Status() { clear(); }
  void show(const std::string& what) {
    if (!tty_) return;
    fmt::print(stderr, "\r\033[Ksqueeze: eval {}", what);
    std::fflush(stderr);
    shown_ = true;
  }
  void clear() {
    if (!shown_) return;
    fmt::print(stderr, "\r\033[K");
    std::fflush(stderr);
    shown_ = false;
  }

 private:
  bool tty_;
  bool shown_ = false;
};

void warn_round_trip(const std::string& path, const std::string& model) {
  fmt::print(stderr,
             "squeeze: warning: {}: {}'s tokenizer does not give these bytes back exactly "
             "(decode(encode(text)) differs); its figures score the tokens it makes\n",
             path, model);
}

std::string num(double v, int decimals) {
  if (!std::isfinite(v)) return "-";
  return fmt::format("{:.{}f}", v, decimals);
}

// A Markdown table: text columns left-aligned, numbers right-aligned.
void print_markdown(const std::vector<std::string>& header, const std::vector<bool>& numeric,
                    const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size());
  for (size_t c = 0; c < header.size(); ++c) {
    w[c] = header[c].size();
    for (const auto& r : rows) w[c] = std::max(w[c], r[c].size());
  }
  auto emit = [&](const std::vector<std::string>& cells) {
    std::string line = "|";
    for (size_t c = 0; c < cells.size(); ++c) {
      const size_t pad = w[c] - cells[c].size();
      line += ' ';
      line += numeric[c] ? std::string(pad, ' ') + cells[c] : cells[c] + std::string(pad, ' ');
      line += " |";
    }
    fmt::print("{}\n", line);
  };
  emit(header);
  std::string rule = "|";
  for (size_t c = 0; c < header.size(); ++c) {
    rule += numeric[c] ? " " + std::string(w[c] - 1, '-') + ": |" : " " + std::string(w[c], '-') + " |";
  }
  fmt::print("{}\n", rule);
  for (const auto& r : rows) emit(r);
}

// How a model is named in tables and charts: its file name, which tells apart files that share a
// general.name (many GGUF files are just "llama") and a checkpoint from its GGUF conversion.
std::string model_label(const Engine& e) {
  return utf8::sanitize(std::filesystem::path(e.model().path).filename().string());
}

nlohmann::json model_json(const Engine& e) {
  const Model& m = e.model();
  const Tokenizer& t = e.require_tokenizer();
  return {{"label", model_label(e)},
          {"name", utf8::sanitize(m.name)},
          {"path", utf8::sanitize(m.path)},
          {"arch", m.config.arch},
          {"format", m.format},
          {"params", m.n_params()},
          {"n_vocab", m.config.n_vocab},
          {"n_ctx_train", m.config.n_ctx_train},
          {"tokenizer", std::string(t.kind())}};
}

nlohmann::json score_json(const eval::ScoreResult& s) {
  return {{"window", s.plan.window},
          {"stride", s.plan.stride},
          {"bos", s.plan.bos},
          {"tokens", s.n_tokens},
          {"evaluated", s.n_evaluated},
          {"windows", s.n_windows},
          {"bits", s.bits},
          {"bits_per_byte", s.bits_per_byte()},
          {"bits_per_char", s.bits_per_char()},
          {"bits_per_token", s.bits_per_token()},
          {"perplexity", s.perplexity()},
          {"tokens_per_second", s.tokens_per_second()},
          {"seconds", s.seconds},
          {"round_trips", s.round_trips}};
}

std::string display_name(const std::string& path) {
  return utf8::sanitize(std::filesystem::path(path).filename().string());
}

// ---- bits per byte --------------------------------------------------------------------------

SqzFigures measure_sqz(const Engine& engine, std::string_view text, const eval::WindowPlan& plan,
                       int threads) {
  codec::ZipOptions o;
  o.chunk_tokens = plan.window;
  o.n_threads = threads;
  codec::ZipStats st;
  codec::zip(engine, text, o, &st);
  SqzFigures f;
  f.archive_bytes = st.archive_bytes;
  f.payload_bytes = st.payload_bytes;
  f.chunks = st.n_chunks;
  f.segments = st.n_segments;
  f.tokens = st.n_tokens;
  f.chunk_tokens = plan.window;
  f.model_bits = st.model_bits;
  f.segment_bits = st.segment_bits;
  f.seconds = st.seconds;
  const auto bytes = static_cast<double>(st.input_bytes);
  const double nan = std::nan("");
  f.bits_per_byte = bytes > 0 ? 8.0 * static_cast<double>(st.archive_bytes) / bytes : nan;
  const double mb = st.model_bits;
  f.archive_overhead_pct = mb > 0 ? 100.0 * (8.0 * static_cast<double>(st.archive_bytes) - mb) / mb : nan;
  // The payload also carries the bits that start segments; what the coder loses is measured over
  // both.
  const double coded = mb + st.segment_bits;
  f.payload_overhead_pct = mb > 0 ? 100.0 * (8.0 * static_cast<double>(st.payload_bytes) - coded) / coded : nan;
  return f;
}

void print_bpb_table(const std::vector<FileRow>& files,
                     const std::vector<std::unique_ptr<Engine>>& engines, bool sqz) {
  std::vector<std::string> header = {"file",     "bytes",      "compressor", "size",
                                     "bits/byte", "bits/char", "bits/token", "ppl",
                                     "tok/s"};
  std::vector<bool> numeric = {false, true, false, true, true, true, true, true, true};
  if (sqz) {
    header.push_back("archive vs model");
    header.push_back("payload vs model");
    numeric.push_back(true);
    numeric.push_back(true);
  }
  std::vector<std::vector<std::string>> rows;
  for (const FileRow& f : files) {
    const std::string name = display_name(f.path);
    const std::string bytes = std::to_string(f.counts.bytes);
    auto row = [&](std::vector<std::string> cells) {
      if (sqz) cells.resize(header.size());
      rows.push_back(std::move(cells));
    };
    for (const codec::BaselineResult& b : f.baselines) {
      row({name, bytes, std::string(codec::baseline_name(b.baseline)),
           std::to_string(b.compressed_bytes), num(b.bits_per_byte(), 3), "", "", "", ""});
    }
    for (const ModelRow& m : f.models) {
      const eval::ScoreResult& s = m.score;
      const std::string model = model_label(*engines[m.model]);
      row({name, bytes, model, fmt::format("~{:.0f}", std::ceil(s.bits / 8.0)),
           num(s.bits_per_byte(), 3), num(s.bits_per_char(), 3), num(s.bits_per_token(), 3),
           num(s.perplexity(), 2), num(s.tokens_per_second(), 0)});
      if (m.sqz) {
        const SqzFigures& z = *m.sqz;
        auto pct = [](double v) { return std::isfinite(v) ? fmt::format("{:+.2f} %", v) : "-"; };
        row({name, bytes, "sqz " + model, std::to_string(z.archive_bytes), num(z.bits_per_byte, 3),
             "", "", "", num(z.seconds > 0 ? static_cast<double>(z.tokens) / z.seconds : NAN, 0),
             pct(z.archive_overhead_pct), pct(z.payload_overhead_pct)});
      }
    }
  }
  print_markdown(header, numeric, rows);
  if (!files.empty() && !files[0].models.empty()) {
    std::string windows;
    for (const ModelRow& m : files[0].models) {
      const eval::WindowPlan& p = m.score.plan;
      windows += fmt::format("{}{}: window {} positions{}, stride {}", windows.empty() ? "" : "; ",
                             model_label(*engines[m.model]), p.window, p.bos ? " (BOS first)" : "",
                             p.stride);
    }
    fmt::print("\n{}\nsize ~: the model's cross-entropy in bytes (what an ideal coder would reach)\n",
               windows);
  }
  if (sqz) {
    fmt::print("sqz: the real archive, segments of at most the window's length, tok/s of zip; vs "
               "model: the archive's (payload's) bits over the model's cross-entropy under zip's "
               "segments\n");
  }
}

nlohmann::json bpb_json(const std::vector<FileRow>& files,
                        const std::vector<std::unique_ptr<Engine>>& engines, const EvalFlags& f,
                        int threads) {
  nlohmann::json j;
  j["threads"] = threads;
  j["kv_type"] = f.kv_type;
  j["models"] = nlohmann::json::array();
  for (const auto& e : engines) j["models"].push_back(model_json(*e));
  j["files"] = nlohmann::json::array();
  for (const FileRow& fr : files) {
    nlohmann::json jf = {{"path", utf8::sanitize(fr.path)},
                         {"bytes", fr.counts.bytes},
                         {"chars", fr.counts.chars},
                         {"invalid_utf8_bytes", fr.counts.invalid_bytes}};
    jf["baselines"] = nlohmann::json::array();
    for (const codec::BaselineResult& b : fr.baselines) {
      jf["baselines"].push_back({{"name", codec::baseline_name(b.baseline)},
                                 {"bytes", b.compressed_bytes},
                                 {"bits_per_byte", b.bits_per_byte()},
                                 {"compress_seconds", b.compress_seconds},
                                 {"decompress_seconds", b.decompress_seconds}});
    }
    jf["models"] = nlohmann::json::array();
    for (const ModelRow& m : fr.models) {
      nlohmann::json jm = score_json(m.score);
      jm["model"] = model_label(*engines[m.model]);
      jm["model_index"] = m.model;
      if (m.sqz) {
        const SqzFigures& z = *m.sqz;
        jm["sqz"] = {{"archive_bytes", z.archive_bytes},
                     {"payload_bytes", z.payload_bytes},
                     {"chunks", z.chunks},
                     {"segments", z.segments},
                     {"tokens", z.tokens},
                     {"chunk_tokens", z.chunk_tokens},
                     {"model_bits", z.model_bits},
                     {"segment_bits", z.segment_bits},
                     {"bits_per_byte", z.bits_per_byte},
                     {"archive_overhead_percent", z.archive_overhead_pct},
                     {"payload_overhead_percent", z.payload_overhead_pct},
                     {"seconds", z.seconds}};
      }
      jf["models"].push_back(std::move(jm));
    }
    j["files"].push_back(std::move(jf));
  }
  return j;
}

void write_chart(const std::string& path, const std::vector<FileRow>& files,
                 const std::vector<std::unique_ptr<Engine>>& engines, bool baselines, bool sqz) {
  eval::BarChart c;
  c.title = "Bits per byte (lower is better)";
  c.y_label = "bits per byte";
  if (baselines) {
    for (codec::Baseline b : codec::all_baselines()) c.series.emplace_back(codec::baseline_name(b));
  }
  for (const auto& e : engines) {
    c.series.push_back(model_label(*e));
    if (sqz) c.series.push_back("sqz " + model_label(*e));
  }
  for (const FileRow& f : files) {
    eval::BarGroup g;
    g.label = display_name(f.path);
    for (const codec::BaselineResult& b : f.baselines) g.values.push_back(b.bits_per_byte());
    for (const ModelRow& m : f.models) {
      g.values.push_back(m.score.bits_per_byte());
      if (sqz) g.values.push_back(m.sqz ? m.sqz->bits_per_byte : std::nan(""));
    }
    c.groups.push_back(std::move(g));
  }
  const std::string svg = eval::render_svg(c);
  write_file_atomic(path, svg.data(), svg.size());
}

int eval_bpb(const EvalFlags& f, const std::vector<std::string>& files,
             const std::vector<std::unique_ptr<Engine>>& engines, const eval::ScoreOptions& so,
             int threads) {
  std::vector<eval::WindowPlan> plans;
  for (const auto& e : engines) plans.push_back(eval::plan_windows(*e, so));
  ThreadPool pool(threads);
  Status status;
  std::vector<FileRow> rows;
  for (const std::string& path : files) {
    MappedFile map(path);
    const std::string_view text(reinterpret_cast<const char*>(map.data()), map.size());
    FileRow fr;
    fr.path = path;
    fr.counts = eval::count_text(text);
    if (!f.no_baselines) {
      for (codec::Baseline b : codec::all_baselines()) {
        status.show(fmt::format("{}: {}", display_name(path), codec::baseline_name(b)));
        fr.baselines.push_back(codec::measure_baseline(b, text));
      }
    }
    for (size_t i = 0; i < engines.size(); ++i) {
      status.show(fmt::format("{}: {}", display_name(path), model_label(*engines[i])));
      ModelRow m;
      m.model = i;
      m.score = eval::score_text(*engines[i], text, so, pool);
      if (f.sqz) {
        status.show(fmt::format("{}: sqz {}", display_name(path), model_label(*engines[i])));
        m.sqz = measure_sqz(*engines[i], text, plans[i], threads);
      }
      if (!m.score.round_trips) {
        status.clear();
        warn_round_trip(path, model_label(*engines[i]));
      }
      fr.models.push_back(std::move(m));
    }
    rows.push_back(std::move(fr));
  }
  status.clear();
  if (f.json) {
    fmt::print("{}\n", bpb_json(rows, engines, f, threads).dump(2));
  } else {
    print_bpb_table(rows, engines, f.sqz);
  }
  if (!f.svg.empty()) {
    write_chart(f.svg, rows, engines, !f.no_baselines, f.sqz);
    if (!f.json) fmt::print("chart: {}\n", f.svg);
  }
  return 0;
}

// ---- KL against a base model ------------------------------------------------------------------

nlohmann::json kl_stats_json(const eval::KlStats& s) {
  return {{"positions", s.n_positions}, {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90},
          {"p99", s.p99},               {"max", s.max},   {"top1_agreement", s.top1_agreement}};
}

int eval_kl(const EvalFlags& f, const std::vector<std::string>& files,
            const std::vector<std::unique_ptr<Engine>>& engines, const Engine& base,
            const eval::ScoreOptions& so, int threads) {
  for (const auto& e : engines) {
    eval::check_same_tokenizer(base, *e);
    eval::ScoreOptions o = so;
    o.window = eval::plan_windows(base, so).window;
    eval::plan_windows(*e, o);
  }
  ThreadPool pool(threads);
  Status status;
  std::vector<KlFile> out;
  // Every position of every file, per model, for the summary over all files.
  std::vector<std::vector<double>> all_kl(engines.size());
  std::vector<uint64_t> all_agree(engines.size(), 0);
  for (const std::string& path : files) {
    MappedFile map(path);
    const std::string_view text(reinterpret_cast<const char*>(map.data()), map.size());
    KlFile kf;
    kf.path = path;
    kf.counts = eval::count_text(text);
    for (size_t i = 0; i < engines.size(); ++i) {
      status.show(fmt::format("{}: {} vs {}", display_name(path), model_label(base),
                              model_label(*engines[i])));
      KlRow row;
      row.model = i;
      row.result = eval::compare_models(base, *engines[i], text, so, pool);
      if (!row.result.base.round_trips) {
        status.clear();
        warn_round_trip(path, model_label(base));
      }
      all_kl[i].insert(all_kl[i].end(), row.result.kl.begin(), row.result.kl.end());
      all_agree[i] += row.result.top1_agree;
      row.result.kl.clear();
      row.result.kl.shrink_to_fit();
      kf.rows.push_back(std::move(row));
    }
    out.push_back(std::move(kf));
  }
  status.clear();
  std::vector<eval::KlStats> overall;
  for (size_t i = 0; i < engines.size(); ++i) {
    overall.push_back(eval::summarize_kl(std::move(all_kl[i]), all_agree[i]));
  }

  if (f.json) {
    nlohmann::json j;
    j["threads"] = threads;
    j["kv_type"] = f.kv_type;
    j["base"] = model_json(base);
    j["models"] = nlohmann::json::array();
    for (const auto& e : engines) j["models"].push_back(model_json(*e));
    j["files"] = nlohmann::json::array();
    for (const KlFile& kf : out) {
      nlohmann::json jf = {{"path", utf8::sanitize(kf.path)}, {"bytes", kf.counts.bytes}};
      jf["kl"] = nlohmann::json::array();
      for (const KlRow& r : kf.rows) {
        nlohmann::json jr = kl_stats_json(r.result.stats);
        jr["model"] = model_label(*engines[r.model]);
        jr["model_index"] = r.model;
        jr["base_score"] = score_json(r.result.base);
        jr["score"] = score_json(r.result.other);
        jf["kl"].push_back(std::move(jr));
      }
      j["files"].push_back(std::move(jf));
    }
    j["overall"] = nlohmann::json::array();
    for (size_t i = 0; i < engines.size(); ++i) {
      nlohmann::json jo = kl_stats_json(overall[i]);
      jo["model"] = model_label(*engines[i]);
      jo["model_index"] = i;
      j["overall"].push_back(std::move(jo));
    }
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  const std::vector<std::string> header = {"file", "model",     "positions", "mean KL", "p50",
                                           "p90",  "p99",       "max",       "top-1",   "bpb base",
                                           "bpb model"};
  const std::vector<bool> numeric = {false, false, true, true, true, true, true, true, true, true, true};
  std::vector<std::vector<std::string>> rows;
  auto stats_cells = [](const eval::KlStats& s) {
    return std::vector<std::string>{std::to_string(s.n_positions), num(s.mean, 6), num(s.p50, 6),
                                    num(s.p90, 6), num(s.p99, 6), num(s.max, 6),
                                    std::isfinite(s.top1_agreement)
                                        ? fmt::format("{:.2f} %", 100.0 * s.top1_agreement)
                                        : "-"};
  };
  for (const KlFile& kf : out) {
    for (const KlRow& r : kf.rows) {
      std::vector<std::string> cells = {display_name(kf.path), model_label(*engines[r.model])};
      for (std::string& c : stats_cells(r.result.stats)) cells.push_back(std::move(c));
      cells.push_back(num(r.result.base.bits_per_byte(), 4));
      cells.push_back(num(r.result.other.bits_per_byte(), 4));
      rows.push_back(std::move(cells));
    }
  }
  if (out.size() > 1) {
    for (size_t i = 0; i < engines.size(); ++i) {
      std::vector<std::string> cells = {"(all files)", model_label(*engines[i])};
      for (std::string& c : stats_cells(overall[i])) cells.push_back(std::move(c));
      cells.push_back("");
      cells.push_back("");
      rows.push_back(std::move(cells));
    }
  }
  print_markdown(header, numeric, rows);
  const eval::WindowPlan p = eval::plan_windows(base, so);
  fmt::print("\nKL(base || model) in nats per scored position; base: {}; window {} positions{}, "
             "stride {}\n",
             model_label(base), p.window, p.bos ? " (BOS first)" : "", p.stride);
  return 0;
}

int run_eval(const EvalFlags& f) {
  if (f.threads < 0 || f.threads > 1024) {
    fail<InvalidArgument>("-t is {}; expected 1 to 1024 threads (0 or none: physical cores)", f.threads);
  }
  if (!f.kl_base.empty() && (f.sqz || !f.svg.empty())) {
    fail<InvalidArgument>("--kl-base compares models position by position; --sqz and --svg belong to "
                          "the bits-per-byte evaluation (run it without --kl-base)");
  }
  eval::ScoreOptions so;
  so.window = f.ctx;
  so.stride = f.stride;
  so.kv_type = ops::parse_kv_type(f.kv_type);
  const std::vector<std::string> files = expand_inputs(f.inputs);
  std::vector<std::unique_ptr<Engine>> engines;
  for (const std::string& m : f.models) engines.push_back(load_engine(m, f.tokenizer));
  const int threads = f.threads > 0 ? f.threads : default_thread_count();
  if (!f.kl_base.empty()) {
    auto base = load_engine(f.kl_base, f.tokenizer);
    return eval_kl(f, files, engines, *base, so, threads);
  }
  return eval_bpb(f, files, engines, so, threads);
}

}  // namespace

Runner add_eval(CLI::App& app) {
  auto f = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Bits per byte of models on text files, beside gzip, bzip2, xz, zstd and brotli");
  cmd->add_option("-m,--model", f->models,
                  "Model file: GGUF, or a llama2.c checkpoint (.bin); repeat for several models")
      ->required()
      ->allow_extra_args(false);
  cmd->add_option("--tokenizer", f->tokenizer,
                  "llama2.c tokenizer file (default: tokenizer.bin, then tok<vocab>.bin beside the "
                  "checkpoint)");
  cmd->add_option("inputs", f->inputs, "Text files, or directories (their regular files, sorted)")
      ->required();
  cmd->add_option("-c,--ctx-size", f->ctx,
                  "Window in model positions, BOS included (default: the model's context, at most "
                  "4096)");
  cmd->add_option("--stride", f->stride, "Tokens between window starts (default: half the window)");
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  add_kv_type_flag(*cmd, f->kv_type);
  cmd->add_flag("--json", f->json, "Print one JSON object instead of the table");
  cmd->add_option("--svg", f->svg, "Also draw a bar chart of bits per byte into this SVG file");
  cmd->add_flag("--sqz", f->sqz, "Also compress each file with squeeze zip and report the archive");
  cmd->add_option("--kl-base", f->kl_base,
                  "Compare each -m model with this one: KL divergence per position, top-1 agreement");
  cmd->add_flag("--no-baselines", f->no_baselines, "Skip the classic compressors");
  return [f] { return run_eval(*f); };
}

}  // namespace sq::cli
