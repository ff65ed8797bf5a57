// squeeze zip / squeeze unzip: the model-driven lossless compressor (codec/sqz.h). Output files are
// written whole to a temporary name and renamed (base/mmap.h), only once every checksum matched;
// an existing output is kept unless -f is given.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>

#include <fmt/core.h>

#include "base/error.h"
#include "base/mmap.h"
#include "cli/commands.h"
#include "codec/sqz.h"
#include "engine/engine.h"

namespace sq::cli {

namespace {

namespace fs = std::filesystem;

std::string read_input(const std::string& path) {
  if (path != "-") return read_file(path);
  std::string data{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  if (std::cin.bad()) fail<IoError>("could not read standard input");
  return data;
}

void check_output(const std::string& path, bool force) {
  if (path == "-" || force) return;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    fail<InvalidArgument>("{} already exists; give -f to overwrite it, or -o for another name", path);
  }
}

void write_output(const std::string& path, const std::string& data) {
  if (path == "-") {
    if (std::fwrite(data.data(), 1, data.size(), stdout) != data.size() || std::fflush(stdout) != 0) {
      fail<IoError>("could not write to standard output");
    }
    return;
  }
  write_file_atomic(path, data.data(), data.size());
}

// Progress on stderr while coding: on a terminal, a line rewritten in place with the bytes done and
// the speed; elsewhere nothing (logs stay clean).
codec::ProgressFn byte_progress(const char* verb) {
  if (::isatty(STDERR_FILENO) != 1) return {};
  const auto start = std::chrono::steady_clock::now();
  return [=](uint64_t done, uint64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (done >= total) {
      fmt::print(stderr, "\r\033[K");
    } else if (s > 0.5) {
      fmt::print(stderr, "\r\033[Ksqueeze: {} {:.1f}/{:.1f} kB {:3.0f}% {:.1f} kB/s", verb, done / 1e3,
                 total / 1e3, 100.0 * static_cast<double>(done) / static_cast<double>(total),
                 static_cast<double>(done) / 1e3 / s);
    }
    std::fflush(stderr);
  };
}

// ---- zip ----------------------------------------------------------------------------------------

struct ZipFlags {
  ModelFlags model;
  std::string input;
  std::string output;
  int32_t chunk = 0;
  int32_t threads = 0;
  bool force = false;
  bool quiet = false;
};

int zip(const ZipFlags& f) {
  std::string out_path = f.output;
  if (out_path.empty()) {
    if (f.input == "-") {
      out_path = "-";
    } else {
      out_path = f.input + ".sqz";
    }
  }
  if (out_path == "-" && ::isatty(STDOUT_FILENO) == 1) {
    fail<InvalidArgument>("compressed data is not written to a terminal; give -o FILE or redirect "
                          "standard output");
  }
  check_output(out_path, f.force);
  const std::string input = read_input(f.input);
  auto engine = Engine::load({f.model.model, f.model.tokenizer});
  codec::ZipOptions o;
  o.chunk_tokens = f.chunk;
  o.n_threads = f.threads;
  if (!f.quiet) o.progress = byte_progress("zip");
  codec::ZipStats st;
  const std::string archive = codec::zip(*engine, input, o, &st);
  check_output(out_path, f.force);  // the output may have appeared while coding
  write_output(out_path, archive);
  if (!f.quiet) {
    const double bpb = st.input_bytes > 0 ? 8.0 * static_cast<double>(st.archive_bytes) /
                                                static_cast<double>(st.input_bytes)
                                          : 0.0;
    const double model_bpb = st.input_bytes > 0 ? st.model_bits / static_cast<double>(st.input_bytes) : 0.0;
    fmt::print(stderr,
               "squeeze: {} -> {}: {} -> {} bytes ({:.3f} bits/byte; the model's cross-entropy {:.3f}), "
               "{} tokens in {} segments of at most {} positions ({} chunks), {:.2f} s ({:.1f} kB/s)\n",
               f.input, out_path, st.input_bytes, st.archive_bytes, bpb, model_bpb, st.n_tokens,
               st.n_segments, codec::read_info(archive).chunk_tokens, st.n_chunks, st.seconds,
               st.seconds > 0 ? static_cast<double>(st.input_bytes) / 1e3 / st.seconds : 0.0);
    if (st.escaped_bytes > 0 || st.stored_chunks > 0) {
      fmt::print(stderr, "squeeze: {} bytes the tokenizer cannot carry were escaped; {} chunks stored "
                         "as they are\n", st.escaped_bytes, st.stored_chunks);
    }
  }
  return 0;
}

// ---- unzip --------------------------------------------------------------------------------------

struct UnzipFlags {
  std::string model;
  std::string tokenizer;
  std::string input;
  std::string output;
  int32_t threads = 0;
  bool force = false;
  bool quiet = false;
};

// The directories searched for the model an archive names: SQUEEZE_MODELS (colon-separated), then
// ~/.cache/squeeze/models, where `make run` puts the default model.
std::vector<fs::path> model_dirs() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("SQUEEZE_MODELS"); env != nullptr && *env != '\0') {
    std::string_view s(env);
    while (!s.empty()) {
      const size_t colon = s.find(':');
      if (colon != 0) dirs.emplace_back(std::string(s.substr(0, colon)));
      if (colon == std::string_view::npos) break;
      s.remove_prefix(colon + 1);
    }
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    dirs.push_back(fs::path(home) / ".cache" / "squeeze" / "models");
  }
  return dirs;
}

std::string find_model(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    fail<FormatError>("the archive names no usable model file (\"{}\"); give the model with -m", name);
  }
  std::vector<std::string> looked;
  for (const fs::path& dir : model_dirs()) {
    looked.push_back(dir.string());
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    if (fs::path direct = dir / name; fs::is_regular_file(direct, ec)) return direct.string();
    // One level of subdirectories (a model in its own folder, as ../shared/models keeps them).
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (!it->is_directory(ec)) continue;
      if (fs::path p = it->path() / name; fs::is_regular_file(p, ec)) return p.string();
    }
  }
  std::string where;
  for (const std::string& d : looked) where += (where.empty() ? "" : ", ") + d;
  fail<IoError>("the archive was written with model \"{}\", which is not in {} (set SQUEEZE_MODELS "
                "to the directory that holds it, or give it with -m)",
                name, where.empty() ? "any model directory (SQUEEZE_MODELS and HOME are unset)" : where);
}

int unzip(const UnzipFlags& f) {
  std::string out_path = f.output;
  if (out_path.empty()) {
    if (f.input == "-") {
      out_path = "-";
    } else if (f.input.size() > 4 && f.input.ends_with(".sqz")) {
      out_path = f.input.substr(0, f.input.size() - 4);
    } else {
      fail<InvalidArgument>("{} does not end in .sqz, so there is no default output name; give -o FILE "
                            "(or -o - for standard output)", f.input);
    }
  }
  check_output(out_path, f.force);
  const std::string archive = read_input(f.input);
  const codec::SqzInfo info = codec::read_info(archive);
  const std::string model_path = f.model.empty() ? find_model(info.model_name) : f.model;
  auto engine = Engine::load({model_path, f.tokenizer});
  codec::UnzipOptions o;
  o.n_threads = f.threads;
  if (!f.quiet) o.progress = byte_progress("unzip");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string data = codec::unzip(*engine, archive, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  check_output(out_path, f.force);
  write_output(out_path, data);
  if (!f.quiet) {
    fmt::print(stderr, "squeeze: {} -> {}: {} bytes with {}, {:.2f} s ({:.1f} kB/s)\n", f.input,
               out_path, data.size(), model_path, s, s > 0 ? static_cast<double>(data.size()) / 1e3 / s : 0.0);
  }
  return 0;
}

}  // namespace

Runner add_zip(CLI::App& app) {
  auto f = std::make_shared<ZipFlags>();
  CLI::App* cmd = app.add_subcommand(
      "zip", "Compress a file losslessly with a model's next-token probabilities (.sqz)");
  add_model_flags(*cmd, f->model);
  cmd->add_option("input", f->input, "File to compress ('-': standard input)")->required();
  cmd->add_option("-o,--output", f->output,
                  "Archive to write ('-': standard output; default: INPUT.sqz, or standard output "
                  "for standard input)");
  cmd->add_option("-c,--chunk", f->chunk,
                  "Model positions per segment, start token included: the most context the model "
                  "sees; the model also starts afresh where the text does (default: the model's "
                  "context, at most 2048). Chunks of up to 8 segments are coded in parallel");
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  cmd->add_flag("-f,--force", f->force, "Overwrite an existing output file");
  cmd->add_flag("-q,--quiet", f->quiet, "No progress and no summary on standard error");
  return [f] { return zip(*f); };
}

Runner add_unzip(CLI::App& app) {
  auto f = std::make_shared<UnzipFlags>();
  CLI::App* cmd = app.add_subcommand("unzip", "Decompress a .sqz archive");
  cmd->add_option("-m,--model", f->model,
                  "Model the archive was written with (default: the file the archive names, looked "
                  "up in SQUEEZE_MODELS, then ~/.cache/squeeze/models); its fingerprint is checked");
  cmd->add_option("--tokenizer", f->tokenizer, "llama2.c tokenizer file (as for the other commands)");
  cmd->add_option("input", f->input, "Archive ('-': standard input)")->required();
  cmd->add_option("-o,--output", f->output,
                  "File to write ('-': standard output; default: INPUT without .sqz)");
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  cmd->add_flag("-f,--force", f->force, "Overwrite an existing output file");
  cmd->add_flag("-q,--quiet", f->quiet, "No progress and no summary on standard error");
  return [f] { return unzip(*f); };
}

}  // namespace sq::cli
