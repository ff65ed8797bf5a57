// squeeze serve: the model behind an OpenAI-compatible HTTP API (docs/server.md). The server
// listens before the model is loaded (health says "loading", the API answers 503), logs one JSON
// line per request on standard error, and stops gracefully on SIGINT or SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "serve/openai_backend.h"
#include "serve/server.h"

namespace sq::cli {

namespace {

struct ServeFlags {
  ModelFlags model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key_file;
  bool insecure_no_auth = false;
  int32_t parallel = 4;
  int32_t queue = 64;
  int32_t ctx = 0;
  int32_t threads = 0;
  std::string chat_template;
  double price_per_cpu_hour = 0.0;
  double timeout = 600.0;
  double shutdown_grace = 10.0;
  std::string alias;
  std::string kv_type = "f16";
  size_t max_body_mib = 8;
  bool log_prompts = false;
};

std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

// One key per line; blank lines and lines starting with '#' are skipped.
std::vector<std::string> read_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail<IoError>("cannot read the API key file {}: {}", path, std::strerror(errno));
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    keys.push_back(line);
  }
  if (keys.empty()) fail<InvalidArgument>("the API key file {} holds no key (one per line expected)", path);
  return keys;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

void log_line(const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

int run(const ServeFlags& f) {
  if (f.port < 0 || f.port > 65535) fail<InvalidArgument>("--port is {}, expected 0..65535 (0: any free port)", f.port);
  if (f.parallel < 1) fail<InvalidArgument>("--parallel is {}, expected at least 1", f.parallel);
  if (f.queue < 0) fail<InvalidArgument>("--queue is {}, expected 0 or more", f.queue);
  // Bounded so that the conversions to milliseconds below cannot overflow.
  if (!(f.timeout >= 0 && f.timeout <= 30 * 86400.0)) {
    fail<InvalidArgument>("--timeout is {}, expected seconds in [0, 2592000] (0: none)", f.timeout);
  }
  if (!(f.shutdown_grace >= 0 && f.shutdown_grace <= 86400.0)) {
    fail<InvalidArgument>("--shutdown-grace is {}, expected seconds in [0, 86400]", f.shutdown_grace);
  }
  if (!(f.price_per_cpu_hour >= 0)) {
    fail<InvalidArgument>("--price-per-cpu-hour is {}, expected a price >= 0", f.price_per_cpu_hour);
  }
  if (f.max_body_mib < 1 || f.max_body_mib > 1024) {
    fail<InvalidArgument>("--max-body-mib is {}, expected 1..1024", f.max_body_mib);
  }

  std::vector<std::string> keys;
  if (!f.api_key_file.empty()) keys = read_keys(f.api_key_file);
  if (const char* env = std::getenv("SQUEEZE_API_KEY"); env != nullptr && *env != '\0') keys.push_back(trim(env));
  if (keys.empty() && !is_loopback(f.host) && !f.insecure_no_auth) {
    fail<InvalidArgument>("--host {} is reachable from other machines but no API key is set: give "
                          "--api-key-file FILE or SQUEEZE_API_KEY, or --insecure-no-auth to serve without keys",
                          f.host);
  }

  // Every thread started from here on inherits the blocked signals, so that only sigtimedwait()
  // below sees SIGINT and SIGTERM.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  serve::ServerOptions so;
  so.host = f.host;
  so.port = f.port;
  so.api_keys = keys;
  so.parallel = f.parallel;
  so.queue = f.queue;
  so.max_body_bytes = f.max_body_mib << 20;
  so.request_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.timeout * 1000));
  so.log_prompts = f.log_prompts;
  serve::Server server(so);
  server.start();
  log_line(fmt::format("squeeze: listening on http://{}:{} ({}; loading {})",
                       f.host.find(':') != std::string::npos ? "[" + f.host + "]" : f.host, server.port(),
                       keys.empty() ? "no API key" : fmt::format("{} API key(s)", keys.size()), f.model.model));

  std::shared_ptr<serve::EngineBackend> backend;
  std::atomic<bool> load_done{false};
  std::string load_error;
  std::thread loader([&] {
    try {
      auto engine = Engine::load({f.model.model, f.model.tokenizer});
      serve::EngineBackendOptions bo;
      bo.scheduler.n_ctx = f.ctx;
      bo.scheduler.parallel = f.parallel;
      bo.scheduler.queue_size = f.queue;
      bo.scheduler.n_threads = f.threads > 0 ? f.threads : default_thread_count();
      bo.scheduler.kv_type = ops::parse_kv_type(f.kv_type);
      bo.scheduler.price_per_cpu_hour = f.price_per_cpu_hour;
      bo.chat_template = f.chat_template;
      bo.model_id = f.alias;
      const Model& m = engine->model();
      const std::string summary = fmt::format("{} ({}, {:.2f} M parameters)", m.path, m.config.arch,
                                              static_cast<double>(m.n_params()) / 1e6);
      backend = std::make_shared<serve::EngineBackend>(
          std::move(engine), bo, [](const std::string& w) { log_line("squeeze: warning: " + w); });
      server.set_backend(backend);
      const serve::ModelInfo info = backend->model_info();
      log_line(fmt::format("squeeze: ready: model \"{}\" = {}, context {}, {} parallel, queue {}, {} threads",
                           info.id, summary, info.n_ctx, f.parallel, f.queue, bo.scheduler.n_threads));
    } catch (const std::exception& e) {
      load_error = e.what();
      server.set_load_error(load_error);
    }
    load_done = true;
  });

  int signal_seen = 0;
  timespec tick{0, 200 * 1000 * 1000};
  while (signal_seen == 0) {
    const int s = sigtimedwait(&signals, nullptr, &tick);
    if (s > 0) signal_seen = s;
    if (load_done && !load_error.empty()) break;
  }
  loader.join();
  if (signal_seen != 0) {
    log_line(fmt::format("squeeze: {} received: finishing running requests (up to {} s), then exiting",
                         signal_seen == SIGINT ? "SIGINT" : "SIGTERM", f.shutdown_grace));
  }
  server.stop(std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_grace * 1000)));
  if (backend) backend->shutdown(/*finish=*/false);
  if (!load_error.empty()) fail<Error>("cannot serve {}: {}", f.model.model, load_error);
  log_line("squeeze: stopped");
  return 0;
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model behind an OpenAI-compatible HTTP API");
  add_model_flags(*cmd, f->model);
  cmd->add_option("--host", f->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", f->port, "Port to listen on (0: any free port)")->capture_default_str();
  cmd->add_option("--api-key-file", f->api_key_file,
                  "File of accepted API keys, one per line (also: SQUEEZE_API_KEY)");
  cmd->add_flag("--insecure-no-auth", f->insecure_no_auth,
                "Allow a non-loopback --host without any API key");
  cmd->add_option("--parallel", f->parallel, "Most sequences generated at once")->capture_default_str();
  cmd->add_option("--queue", f->queue, "Most requests waiting; more get HTTP 429")->capture_default_str();
  cmd->add_option("-c,--ctx-size", f->ctx, "Context per sequence (default: the model's, at most 4096)");
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  cmd->add_option("--chat-template", f->chat_template,
                  "Built-in chat format instead of the model's own: chatml, llama2, llama3, mistral, gemma, zephyr");
  cmd->add_option("--price-per-cpu-hour", f->price_per_cpu_hour,
                  "Money per CPU-hour, for the cost reported with each response")
      ->capture_default_str();
  cmd->add_option("--timeout", f->timeout, "Seconds a generation may take, queueing included (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--shutdown-grace", f->shutdown_grace,
                  "Seconds running requests get to finish after SIGINT/SIGTERM")
      ->capture_default_str();
  cmd->add_option("--alias", f->alias, "Model name clients use (default: the file name without extension)");
  cmd->add_option("--max-body-mib", f->max_body_mib, "Largest request body in MiB; larger get HTTP 413")
      ->capture_default_str();
  cmd->add_flag("--log-prompts", f->log_prompts, "Put each request's prompt in the access log (off: never)");
  add_kv_type_flag(*cmd, f->kv_type);
  return [f] { return run(*f); };
}

}  // namespace sq::cli
