#include "serve/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <random>
#include <unordered_map>

#include <fmt/format.h>
#include <httplib.h>

#include "base/error.h"
#include "serve/openai.h"

namespace sq::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// --- Connections -----------------------------------------------------------------------------

// The socket of one connection as httplib's Stream, with what httplib 0.11 lacks: a deadline for
// reading a whole request (a client that sends a byte a second never trips a per-read timeout),
// a way to notice a peer that has gone, and waits cut short when the server stops.
class ConnStream final : public httplib::Stream {
 public:
  ConnStream(int sock, std::chrono::milliseconds io_timeout, const std::atomic<bool>& stopping)
      : sock_(sock), io_timeout_(io_timeout), stopping_(stopping) {}

  void arm(Clock::time_point deadline) { deadline_ = deadline; }
  void disarm() { deadline_ = Clock::time_point::max(); }
  bool deadline_passed() const { return deadline_hit_; }

  // Waits up to `limit` for the first byte of the next request (keep-alive).
  bool wait_next_request(std::chrono::milliseconds limit) {
    if (pos_ < len_) return true;
    const auto end = Clock::now() + limit;
    while (!stopping_.load()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{sock_, POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
    return false;
  }

  // The peer has not closed or reset the connection (a FIN or RST shows as readable with
  // nothing to read).
  bool peer_alive() const {
    if (pos_ < len_) return true;
    pollfd p{sock_, POLLIN, 0};
    const int r = ::poll(&p, 1, 0);
    if (r <= 0) return r == 0 || errno == EINTR;
    if (p.revents & (POLLERR | POLLNVAL)) return false;
    char c;
    const ssize_t n = ::recv(sock_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return true;
    if (n == 0) return false;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }

  bool is_readable() const override { return pos_ < len_ || wait(POLLIN, /*reading=*/true); }
  bool is_writable() const override { return wait(POLLOUT, /*reading=*/false) && peer_alive(); }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ < len_) {
      const size_t n = std::min(size, len_ - pos_);
      std::memcpy(ptr, buf_ + pos_, n);
      pos_ += n;
      return static_cast<ssize_t>(n);
    }
    if (!wait(POLLIN, true)) return -1;
    // httplib reads header lines a byte at a time: buffer small reads so that each is not a system
    // call.
    const bool direct = size >= sizeof(buf_);
    ssize_t n;
    do {
      n = ::recv(sock_, direct ? ptr : buf_, direct ? size : sizeof(buf_), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0 || direct) return n;
    len_ = static_cast<size_t>(n);
    pos_ = 0;
    return read(ptr, size);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!wait(POLLOUT, false)) return -1;
    ssize_t n;
    do {
      n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(false, ip, port); }
  socket_t socket() const override { return sock_; }

 private:
  // Waits for `events` within the I/O timeout and, for reads, the request deadline; reads also
  // give up when the server stops.
  bool wait(short events, bool reading) const {
    auto end = Clock::now() + io_timeout_;
    if (reading && deadline_ < end) end = deadline_;
    for (;;) {
      if (reading && stopping_.load()) return false;
      const auto now = Clock::now();
      if (now >= end) {
        if (reading && now >= deadline_) deadline_hit_ = true;
        return false;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - now).count();
      pollfd p{sock_, events, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left, 1, 100)));
      if (r > 0) return (p.revents & (POLLERR | POLLNVAL)) == 0 || (p.revents & events) != 0;
      if (r < 0 && errno != EINTR) return false;
    }
  }

  void address(bool remote, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof(a);
    const int r = remote ? ::getpeername(sock_, reinterpret_cast<sockaddr*>(&a), &len)
                         : ::getsockname(sock_, reinterpret_cast<sockaddr*>(&a), &len);
    ip.clear();
    port = 0;
    if (r != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto* s = reinterpret_cast<const sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &s->sin_addr, text, sizeof(text));
      port = ntohs(s->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &s->sin6_addr, text, sizeof(text));
      port = ntohs(s->sin6_port);
    }
    ip = text;
  }

  int sock_;
  std::chrono::milliseconds io_timeout_;
  const std::atomic<bool>& stopping_;
  Clock::time_point deadline_ = Clock::time_point::max();
  mutable bool deadline_hit_ = false;
  char buf_[4096];
  size_t pos_ = 0, len_ = 0;
};

// What the access log and the metrics learn about the request being served on this thread.
struct RequestRecord {
  Clock::time_point start;
  std::string route;
  std::string id;
  int32_t prompt_tokens = -1;
  int32_t completion_tokens = -1;
  int32_t cached_tokens = -1;
  bool client_gone = false;
  std::string prompt;  // with ServerOptions::log_prompts
  // Answered before its body was read (401, 503): the unread body would be taken for the next
  // request, so the connection closes after the response.
  bool close_connection = false;
};

// httplib serves a connection on one worker thread from its first byte to its close: the handlers
// reach their connection (to watch for a client that leaves) and their log record through this.
struct ConnContext {
  ConnStream* stream = nullptr;
  RequestRecord record;
};
thread_local ConnContext* t_conn = nullptr;

// --- Metrics ---------------------------------------------------------------------------------

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}
  void observe(double v) {
    size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
  }
  void render(std::string& out, const char* name, const char* help) const {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    int64_t cumulative = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i];
      out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
    }
    out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name, sum_, name,
                       count_);
  }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;
  double sum_ = 0;
  int64_t count_ = 0;
};

// The process's resident set size in bytes (what the kernel counts as "RSS": mapped model pages
// that were touched, heap, stacks), from /proc/self/statm; nullopt where that file does not exist
// (not Linux) or does not parse.
std::optional<int64_t> resident_memory_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return std::nullopt;
  long long size_pages = 0, resident_pages = 0;
  const int n = std::fscanf(f, "%lld %lld", &size_pages, &resident_pages);
  std::fclose(f);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (n != 2 || page <= 0) return std::nullopt;
  return static_cast<int64_t>(resident_pages) * page;
}

}  // namespace

class HttpMetrics {
 public:
  void count_request(const std::string& route, int status) {
    std::lock_guard lock(mutex_);
    ++requests_[{route, status}];
  }
  void observe_generation(const Cost& cost, int32_t completion_tokens) {
    std::lock_guard lock(mutex_);
    if (completion_tokens > 0) ttft_.observe(cost.ttft_seconds);
    request_.observe(cost.total_seconds);
  }
  // `tokens` tokens arrived `gap` seconds after the previous ones of the same choice: each counts
  // as one gap of gap / tokens (a Delta carries several when text was held back for a stop string
  // or an incomplete character).
  void observe_token_gap(double gap, size_t tokens) {
    std::lock_guard lock(mutex_);
    for (size_t k = 0; k < tokens; ++k) itl_.observe(gap / static_cast<double>(tokens));
  }
  void count_disconnect() {
    std::lock_guard lock(mutex_);
    ++disconnects_;
  }
  void count_deadline() {
    std::lock_guard lock(mutex_);
    ++deadlines_;
  }
  void render(std::string& out) const {
    std::lock_guard lock(mutex_);
    out += "# HELP squeeze_http_requests_total HTTP requests answered, by route and status.\n"
           "# TYPE squeeze_http_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
      out += fmt::format("squeeze_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
    }
    out += fmt::format(
        "# HELP squeeze_http_client_disconnects_total Requests cancelled because the client went away.\n"
        "# TYPE squeeze_http_client_disconnects_total counter\nsqueeze_http_client_disconnects_total {}\n"
        "# HELP squeeze_http_read_deadline_total Connections cut off for not sending a request in time.\n"
        "# TYPE squeeze_http_read_deadline_total counter\nsqueeze_http_read_deadline_total {}\n",
        disconnects_, deadlines_);
    ttft_.render(out, "squeeze_time_to_first_token_seconds", "Time from arrival to the first generated token.");
    itl_.render(out, "squeeze_inter_token_latency_seconds",
                "Time between consecutive generated tokens of a choice, as the server receives them.");
    request_.render(out, "squeeze_request_duration_seconds", "Time from arrival to the end of a generation.");
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t disconnects_ = 0, deadlines_ = 0;
  Histogram ttft_{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  Histogram itl_{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
  Histogram request_{{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}};
};

namespace {

// httplib's Server with connections served by ConnStream (see above). The override replaces
// httplib's own loop over the requests of a kept-alive connection.
class HttpServer final : public httplib::Server {
 public:
  HttpServer(const ServerOptions& options, const std::atomic<bool>& stopping, HttpMetrics& metrics)
      : options_(options), stopping_(stopping), metrics_(metrics) {}

 private:
  bool process_and_close_socket(socket_t sock) override {
    bool ok = true;
    {
      ConnStream stream(sock, options_.io_timeout, stopping_);
      ConnContext ctx;
      ctx.stream = &stream;
      t_conn = &ctx;
      for (int count = 100; count > 0; --count) {
        if (!stream.wait_next_request(options_.keep_alive)) break;
        ctx.record = RequestRecord{};
        ctx.record.start = Clock::now();
        stream.arm(ctx.record.start + options_.read_deadline);
        bool closed = false;
        ok = process_request(stream, count == 1 || stopping_.load(), closed, [](httplib::Request&) {});
        if (stream.deadline_passed()) {
          metrics_.count_deadline();
          std::string ip;
          int port = 0;
          stream.get_remote_ip_and_port(ip, port);
          log_line(json{{"event", "read_deadline"}, {"remote", ip},
                        {"ms", std::chrono::duration<double, std::milli>(Clock::now() - ctx.record.start).count()}});
          break;
        }
        if (!ok || closed || ctx.record.close_connection) break;
      }
      t_conn = nullptr;
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }

 public:
  void log_line(const json& j) const {
    const std::string line = dump_json(j);
    if (options_.log) {
      options_.log(line);
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }

 private:
  const ServerOptions& options_;
  const std::atomic<bool>& stopping_;
  HttpMetrics& metrics_;
};

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

// Compares without an early exit, so that the time taken does not tell how much of a guess was
// right. The length of the right key is not secret enough to hide (it is the same for every guess).
bool same_key(std::string_view given, std::string_view key) {
  unsigned diff = given.size() == key.size() ? 0u : 1u;
  for (size_t i = 0; i < key.size(); ++i) {
    const char g = given.empty() ? '\0' : given[i % given.size()];
    diff |= static_cast<unsigned>(static_cast<uint8_t>(g) ^ static_cast<uint8_t>(key[i]));
  }
  return diff == 0;
}

std::string route_of(const std::string& path) {
  static const char* kRoutes[] = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                                  "/health", "/metrics"};
  for (const char* r : kRoutes) {
    if (path == r) return r;
  }
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status() == 429) res.set_header("Retry-After", "1");
  send_json(res, e.status(), error_json(e));
}

ApiError server_error(const std::string& message) {
  return ApiError(500, "server_error", "", "internal_error", message);
}

ApiError unavailable(const std::string& message) {
  return ApiError(503, "server_error", "", "model_not_ready", message);
}

// One scheduler request behind an HTTP request: a prompt with its n choices.
struct Submitted {
  std::shared_ptr<RequestHandle> handle;
  int32_t choice0 = 0;  // index of its first choice in the response
  bool done = false;
};

}  // namespace

// --- The server ------------------------------------------------------------------------------

struct Server::Impl {
  Server& owner;
  const ServerOptions& options;
  std::atomic<bool> stopping{false};  // connections close; reads give up
  std::atomic<bool> draining{false};  // new requests get 503
  HttpMetrics metrics;
  HttpServer http;
  std::thread listener;

  mutable std::mutex backend_mutex;
  std::shared_ptr<Backend> backend;
  std::string load_error;

  std::mutex handles_mutex;
  std::unordered_map<RequestHandle*, std::shared_ptr<RequestHandle>> handles;

  Impl(Server& o, const ServerOptions& opts) : owner(o), options(opts), http(opts, stopping, metrics) {}

  std::shared_ptr<Backend> ready_backend() const {
    std::lock_guard lock(backend_mutex);
    if (!load_error.empty()) throw unavailable("the model failed to load: " + load_error);
    if (!backend) throw unavailable("the model is still loading; retry shortly");
    return backend;
  }

  void track(const std::shared_ptr<RequestHandle>& h) {
    std::lock_guard lock(handles_mutex);
    handles.emplace(h.get(), h);
  }
  void untrack(const std::shared_ptr<RequestHandle>& h) {
    std::lock_guard lock(handles_mutex);
    handles.erase(h.get());
  }
  void cancel_all() {
    std::vector<std::shared_ptr<RequestHandle>> all;
    {
      std::lock_guard lock(handles_mutex);
      for (auto& [p, h] : handles) all.push_back(h);
    }
    for (auto& h : all) h->cancel();
  }

  // Counts the request in flight for Server::stop until the last copy is dropped.
  std::shared_ptr<void> in_flight_guard() {
    owner.in_flight_.fetch_add(1);
    return std::shared_ptr<void>(nullptr, [this](void*) { owner.in_flight_.fetch_sub(1); });
  }

  void setup();
  void check_model(const Backend& backend, const std::string& model) const;

  void handle_models(const httplib::Request& req, httplib::Response& res);
  void handle_health(httplib::Response& res);
  void handle_metrics(httplib::Response& res);
  void handle_generation(const std::string& raw, httplib::Response& res, bool chat);
  void handle_embeddings(const std::string& raw, httplib::Response& res);

  // Drains the events of `subs` until each is Done, passing each event on. Returns false when it
  // stopped early: `on_event` returned false, or `alive` said the client left (requests cancelled).
  bool pump(std::vector<Submitted>& subs, const std::function<bool(size_t, Event&)>& on_event,
            const std::function<bool()>& alive);
};

Server::Server(ServerOptions options) : options_(std::move(options)) {
  impl_ = std::make_unique<Impl>(*this, options_);
}

Server::~Server() { stop(std::chrono::milliseconds(0)); }

void Server::set_backend(std::shared_ptr<Backend> backend) {
  std::lock_guard lock(impl_->backend_mutex);
  impl_->backend = std::move(backend);
}

void Server::set_load_error(const std::string& message) {
  std::lock_guard lock(impl_->backend_mutex);
  impl_->load_error = message.empty() ? "unknown error" : message;
}

void Server::start() {
  impl_->setup();
  if (options_.port == 0) {
    port_ = impl_->http.bind_to_any_port(options_.host);
    if (port_ < 0) fail<IoError>("cannot listen on {} (any port)", options_.host);
  } else {
    if (!impl_->http.bind_to_port(options_.host, options_.port)) {
      fail<IoError>("cannot listen on {}:{}: the address is in use or not available", options_.host, options_.port);
    }
    port_ = options_.port;
  }
  impl_->listener = std::thread([this] { impl_->http.listen_after_bind(); });
  // httplib's stop() does nothing until the listening loop has begun: wait for it, so that a stop
  // right after start (a model that fails to load at once) cannot leave the loop running.
  const auto end = Clock::now() + std::chrono::seconds(10);
  while (!impl_->http.is_running() && Clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void Server::stop(std::chrono::milliseconds grace) {
  if (!impl_ || !impl_->listener.joinable()) return;
  impl_->draining = true;
  impl_->http.stop();  // closes the listening socket; connections already open stay
  const auto wait_idle = [&](std::chrono::milliseconds limit) {
    const auto end = Clock::now() + limit;
    while (in_flight_.load() > 0 && Clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  wait_idle(grace);
  impl_->cancel_all();
  wait_idle(std::chrono::milliseconds(5000));
  impl_->stopping = true;
  impl_->listener.join();  // the pool's workers are joined when the listener returns
}

void Server::Impl::setup() {
  const int32_t threads = options.http_threads > 0 ? options.http_threads
                                                   : std::max(options.parallel, 1) + std::max(options.queue, 0) + 8;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http.set_payload_max_length(options.max_body_bytes);
  const auto io = options.io_timeout.count();
  http.set_read_timeout(io / 1000, (io % 1000) * 1000);
  http.set_write_timeout(io / 1000, (io % 1000) * 1000);
  http.set_keep_alive_max_count(100);

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string route = route_of(req.path);
    if (t_conn) t_conn->record.route = route;
    const auto reject = [&](const ApiError& e) {
      send_error(res, e);
      res.set_header("Connection", "close");
      if (t_conn) t_conn->record.close_connection = true;
      return httplib::Server::HandlerResponse::Handled;
    };
    const bool guarded = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
    if (guarded && !options.api_keys.empty()) {
      const std::string auth = req.get_header_value("Authorization");
      const std::string_view prefix = "Bearer ";
      bool ok = false;
      if (auth.size() > prefix.size() && std::string_view(auth).substr(0, prefix.size()) == prefix) {
        const std::string_view given = std::string_view(auth).substr(prefix.size());
        for (const std::string& key : options.api_keys) ok |= same_key(given, key);  // no early exit
      }
      if (!ok) {
        return reject(ApiError(401, "invalid_request_error", "", "invalid_api_key",
                               auth.empty() ? "no API key: send it as Authorization: Bearer KEY"
                                            : "the API key is not valid"));
      }
    }
    if (draining.load() && route != "/health" && route != "/metrics") {
      return reject(ApiError(503, "server_error", "", "shutting_down", "the server is shutting down"));
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // Every route runs here: the read deadline stops once the body is in, and any error becomes
  // OpenAI's error object.
  auto guarded = [this](httplib::Response& res, const std::function<void()>& fn) {
    if (t_conn) t_conn->stream->disarm();
    try {
      fn();
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const ShuttingDown&) {
      send_error(res, ApiError(503, "server_error", "", "shutting_down", "the server is shutting down"));
    } catch (const QueueFull& e) {
      send_error(res, ApiError(429, "rate_limit_error", "", "queue_full",
                               fmt::format("the server is busy ({}); retry shortly", e.what())));
    } catch (const InvalidArgument& e) {
      send_error(res, ApiError(400, "invalid_request_error", "", "invalid_value", e.what()));
    } catch (const UnsupportedError& e) {
      send_error(res, ApiError(400, "invalid_request_error", "", "unsupported", e.what()));
    } catch (const std::bad_alloc&) {
      send_error(res, server_error("out of memory"));
    } catch (const std::exception& e) {
      send_error(res, server_error(e.what()));
    }
  };
  auto get = [this, guarded](const char* path, std::function<void(const httplib::Request&, httplib::Response&)> fn) {
    http.Get(path, [guarded, fn](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { fn(req, res); });
    });
  };
  // POST bodies are read here rather than by httplib, which caps bodies sent as
  // application/x-www-form-urlencoded (what `curl -d` sends unless told otherwise) at 8 KiB.
  auto post = [this, guarded](const char* path, std::function<void(const std::string&, httplib::Response&)> fn) {
    http.Post(path, [this, guarded, fn](const httplib::Request&, httplib::Response& res,
                                        const httplib::ContentReader& reader) {
      std::string body;
      bool too_large = false;
      const bool read = reader([&](const char* data, size_t n) {
        if (body.size() + n > options.max_body_bytes) {
          too_large = true;
          return false;
        }
        body.append(data, n);
        return true;
      });
      if (too_large || res.status == 413 || !read) {
        // The rest of the body is unread: this connection cannot carry another request.
        res.set_header("Connection", "close");
        if (t_conn) t_conn->record.close_connection = true;
        if (too_large || res.status == 413) {
          send_error(res, ApiError(413, "invalid_request_error", "", "request_too_large",
                                   fmt::format("the request body is larger than the server accepts ({} bytes)",
                                               options.max_body_bytes)));
        } else {
          send_error(res, ApiError(400, "invalid_request_error", "", "incomplete_body",
                                   "the request body could not be read"));
        }
        return;
      }
      guarded(res, [&] { fn(body, res); });
    });
  };
  get("/v1/models", [this](const auto& req, auto& res) { handle_models(req, res); });
  get("/v1/models/(.+)", [this](const auto& req, auto& res) { handle_models(req, res); });
  get("/health", [this](const auto&, auto& res) { handle_health(res); });
  get("/metrics", [this](const auto&, auto& res) { handle_metrics(res); });
  post("/v1/chat/completions", [this](const auto& body, auto& res) { handle_generation(body, res, true); });
  post("/v1/completions", [this](const auto& body, auto& res) { handle_generation(body, res, false); });
  post("/v1/embeddings", [this](const auto& body, auto& res) { handle_embeddings(body, res); });

  // Statuses httplib sets itself (404 for an unknown route, 413 for a body over the limit, 400 for
  // a request it cannot parse) get a body in OpenAI's shape too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 404) {
      send_error(res, ApiError(404, "invalid_request_error", "", "unknown_url",
                               fmt::format("no route {} {}", req.method, req.path)));
    } else if (res.status == 413) {
      send_error(res, ApiError(413, "invalid_request_error", "", "request_too_large",
                               "the request body is larger than the server accepts"));
    } else {
      send_error(res, ApiError(res.status, "invalid_request_error", "", "",
                               fmt::format("the request could not be handled (HTTP {})", res.status)));
    }
    return httplib::Server::HandlerResponse::Handled;
  }));

  // One line per request, after its response was written (streams included).
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    RequestRecord rec = t_conn ? t_conn->record : RequestRecord{};
    const std::string route = rec.route.empty() ? route_of(req.path) : rec.route;
    metrics.count_request(route, res.status);
    json line = {{"time", utc_timestamp()}, {"method", req.method}, {"path", req.path},
                 {"status", res.status}, {"remote", req.remote_addr}};
    if (t_conn) line["ms"] = std::chrono::duration<double, std::milli>(Clock::now() - rec.start).count();
    if (!rec.id.empty()) line["id"] = rec.id;
    if (rec.prompt_tokens >= 0) line["prompt_tokens"] = rec.prompt_tokens;
    if (rec.completion_tokens >= 0) line["completion_tokens"] = rec.completion_tokens;
    if (rec.cached_tokens >= 0) line["cached_tokens"] = rec.cached_tokens;
    if (rec.client_gone) line["client_gone"] = true;
    if (!rec.prompt.empty()) line["prompt"] = rec.prompt;
    http.log_line(line);
  });
}

void Server::Impl::check_model(const Backend& b, const std::string& model) const {
  // A local server serves one model: an absent name means it, any other name is unknown.
  if (!model.empty() && model != b.model_info().id) {
    throw ApiError(404, "invalid_request_error", "model", "model_not_found",
                   fmt::format("the model '{}' does not exist; this server serves '{}'", model, b.model_info().id));
  }
}

void Server::Impl::handle_models(const httplib::Request& req, httplib::Response& res) {
  auto b = ready_backend();
  const ModelInfo info = b->model_info();
  json model = {{"id", info.id}, {"object", "model"}, {"created", info.created}, {"owned_by", "squeeze"},
                {"context_length", info.n_ctx}};
  if (req.matches.size() > 1) {
    check_model(*b, req.matches[1].str());
    send_json(res, 200, model);
    return;
  }
  send_json(res, 200, json{{"object", "list"}, {"data", json::array({model})}});
}

void Server::Impl::handle_health(httplib::Response& res) {
  std::shared_ptr<Backend> b;
  std::string error;
  {
    std::lock_guard lock(backend_mutex);
    b = backend;
    error = load_error;
  }
  if (draining.load()) {
    send_json(res, 503, json{{"status", "shutting_down"}});
  } else if (!error.empty()) {
    send_json(res, 503, json{{"status", "error"}, {"error", error}});
  } else if (!b) {
    send_json(res, 503, json{{"status", "loading"}});
  } else {
    const SchedulerMetrics m = b->metrics();
    send_json(res, 200, json{{"status", "ok"}, {"model", b->model_info().id}, {"running", m.running},
                             {"waiting", m.waiting}});
  }
}

void Server::Impl::handle_metrics(httplib::Response& res) {
  std::string out;
  std::shared_ptr<Backend> b;
  {
    std::lock_guard lock(backend_mutex);
    b = backend;
  }
  out += fmt::format("# HELP squeeze_up Whether the model is loaded and serving.\n# TYPE squeeze_up gauge\n"
                     "squeeze_up {}\n",
                     b ? 1 : 0);
  if (b) {
    const SchedulerMetrics m = b->metrics();
    auto counter = [&](const char* name, const char* help, auto value) {
      out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, value);
    };
    auto gauge = [&](const char* name, const char* help, auto value) {
      out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help, name, name, value);
    };
    counter("squeeze_requests_total", "Requests the scheduler accepted.", m.requests_total);
    counter("squeeze_requests_rejected_total", "Requests refused because the queue was full.", m.requests_rejected);
    counter("squeeze_requests_cancelled_total", "Requests cancelled (client gone, deadline, shutdown).",
            m.requests_cancelled);
    counter("squeeze_prompt_tokens_total", "Prompt tokens of accepted requests.", m.prompt_tokens_total);
    counter("squeeze_cached_prompt_tokens_total", "Prompt tokens found in the prefix cache.",
            m.cached_prompt_tokens_total);
    counter("squeeze_generated_tokens_total", "Tokens generated.", m.generated_tokens_total);
    counter("squeeze_cpu_seconds_total", "CPU time of the scheduler's steps.", m.cpu_seconds_total);
    counter("squeeze_steps_total", "Batched forward passes.", m.steps_total);
    counter("squeeze_parallel_regions_total",
            "Parallel regions of the forward passes (matrix products, attention, per-token steps).",
            m.parallel_regions_total);
    counter("squeeze_parallel_regions_alone_total",
            "Parallel regions run on one thread because the other threads were slower (other work on the CPUs).",
            m.parallel_regions_alone_total);
    gauge("squeeze_running_sequences", "Sequences in the running batch.", m.running);
    gauge("squeeze_waiting_requests", "Requests in the queue.", m.waiting);
    gauge("squeeze_kv_blocks_total", "KV cache blocks.", m.kv_blocks_total);
    gauge("squeeze_kv_blocks_used", "KV cache blocks held by running sequences.", m.kv_blocks_used);
    gauge("squeeze_kv_blocks_cached", "Free KV cache blocks holding a reusable prefix.", m.kv_blocks_cached);
    gauge("squeeze_kv_blocks_free", "KV cache blocks neither used nor cached.",
          std::max(0, m.kv_blocks_total - m.kv_blocks_used - m.kv_blocks_cached));
    const double hit = m.prompt_tokens_total > 0 ? static_cast<double>(m.cached_prompt_tokens_total) /
                                                       static_cast<double>(m.prompt_tokens_total)
                                                 : 0.0;
    gauge("squeeze_prefix_cache_hit_ratio", "Share of prompt tokens served from the prefix cache.", hit);
  }
  out += fmt::format("# HELP squeeze_http_in_flight Requests being served.\n# TYPE squeeze_http_in_flight gauge\n"
                     "squeeze_http_in_flight {}\n",
                     owner.in_flight_.load());
  metrics.render(out);
  if (const auto rss = resident_memory_bytes()) {
    out += fmt::format("# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                       "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
                       *rss);
  }
  res.status = 200;
  res.set_content(out, "text/plain; version=0.0.4; charset=utf-8");
}

bool Server::Impl::pump(std::vector<Submitted>& subs, const std::function<bool(size_t, Event&)>& on_event,
                        const std::function<bool()>& alive) {
  auto cancel_rest = [&] {
    for (Submitted& s : subs) {
      if (!s.done) s.handle->cancel();
    }
  };
  Event ev;
  auto last_check = Clock::now();
  // When each choice's last tokens arrived, for the inter-token latency.
  std::map<std::pair<size_t, int32_t>, Clock::time_point> last_tokens;
  for (;;) {
    size_t open = 0;
    bool got = false;
    for (size_t i = 0; i < subs.size(); ++i) {
      Submitted& s = subs[i];
      if (s.done) continue;
      ++open;
      // One request: block on it. Several: look at each in turn without blocking. Then take what
      // is queued, and no more, so that the client is still watched while events keep coming.
      auto wait = std::chrono::milliseconds(subs.size() == 1 ? 100 : 0);
      while (s.handle->next(ev, wait)) {
        wait = std::chrono::milliseconds(0);
        got = true;
        if (ev.kind == Event::Kind::Done || ev.kind == Event::Kind::Error) s.done = true;
        if (ev.kind == Event::Kind::Delta && !ev.tokens.empty()) {
          const auto at = Clock::now();
          const auto [it, first] = last_tokens.try_emplace({i, ev.choice}, at);
          if (!first) {
            metrics.observe_token_gap(std::chrono::duration<double>(at - it->second).count(), ev.tokens.size());
            it->second = at;
          }
        }
        if (!on_event(i, ev)) {
          cancel_rest();
          return false;
        }
        if (s.done) break;
      }
    }
    if (open == 0) return true;
    // Watching the client costs a poll: do it a few times a second, and whenever events stall.
    const auto now = Clock::now();
    if (!got || now - last_check > std::chrono::milliseconds(100)) {
      last_check = now;
      if (!alive()) {
        cancel_rest();
        metrics.count_disconnect();
        if (t_conn) t_conn->record.client_gone = true;
        return false;
      }
    }
    if (!got && subs.size() > 1) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

namespace {

// Folds a request's Done figures into the totals of the HTTP request.
void add_totals(RequestTotals& t, const Event& ev, bool first) {
  t.usage.prompt_tokens += ev.usage.prompt_tokens;
  t.usage.completion_tokens += ev.usage.completion_tokens;
  t.usage.cached_tokens += ev.usage.cached_tokens;
  t.cost.cpu_seconds += ev.cost.cpu_seconds;
  t.cost.price += ev.cost.price;
  if (first) {
    t.cost.queue_seconds = ev.cost.queue_seconds;
    t.cost.ttft_seconds = ev.cost.ttft_seconds;
    t.cost.generation_tps = ev.cost.generation_tps;
  } else {
    t.cost.queue_seconds = std::min(t.cost.queue_seconds, ev.cost.queue_seconds);
    t.cost.ttft_seconds = std::min(t.cost.ttft_seconds, ev.cost.ttft_seconds);
    t.cost.generation_tps += ev.cost.generation_tps;
  }
  t.cost.total_seconds = std::max(t.cost.total_seconds, ev.cost.total_seconds);
}

std::string sse(const json& j) { return "data: " + dump_json(j) + "\n\n"; }

}  // namespace

void Server::Impl::handle_generation(const std::string& raw, httplib::Response& res, bool chat) {
  auto backend = ready_backend();
  const ModelInfo info = backend->model_info();
  const ModelLimits limits{info.n_vocab, info.n_ctx};
  const nlohmann::ordered_json body = parse_body(raw);
  if (options.log_prompts && t_conn) {
    if (const auto it = body.find(chat ? "messages" : "prompt"); it != body.end()) {
      t_conn->record.prompt = dump_json(*it).substr(0, size_t{64} << 10);
    }
  }

  GenerationParams params;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<size_t> prompt_bytes;
  // Text that cannot fit is refused before the tokenizer spends seconds on megabytes of it.
  const auto check_text_size = [&](size_t bytes, const std::string& param) {
    if (info.max_token_bytes > 0 && bytes > static_cast<size_t>(info.n_ctx) * static_cast<size_t>(info.max_token_bytes)) {
      bad_param(param, fmt::format("the prompt has {} bytes, more than {} tokens of at most {} bytes each can hold: "
                                   "the context holds {} tokens",
                                   bytes, info.n_ctx, info.max_token_bytes, info.n_ctx),
                "context_length_exceeded");
    }
  };
  if (chat) {
    ChatRequest r = parse_chat_request(body, limits);
    params = std::move(r.params);
    check_model(*backend, params.model);
    size_t bytes = 0;
    for (const auto& m : r.messages) bytes += m["content"].get_ref<const std::string&>().size();
    check_text_size(bytes, "messages");
    try {
      prompts.push_back(backend->tokenize_chat(r.messages));
    } catch (const Error& e) {
      bad_param("messages", fmt::format("the chat template cannot render these messages: {}", e.what()));
    }
  } else {
    CompletionRequest r = parse_completion_request(body, limits);
    params = std::move(r.params);
    check_model(*backend, params.model);
    for (PromptInput& p : r.prompts) {
      if (p.is_tokens) {
        prompt_bytes.push_back(0);
        for (int32_t t : p.tokens) prompt_bytes.back() += backend->token_bytes(t).size();
        prompts.push_back(std::move(p.tokens));
      } else {
        check_text_size(p.text.size(), "prompt");
        prompt_bytes.push_back(p.text.size());
        prompts.push_back(backend->tokenize_text(p.text));
      }
    }
  }
  if (params.n > std::max(options.parallel, 1)) {
    bad_param("n", fmt::format("n is {}, this server generates at most {} choices at once (--parallel)", params.n,
                               std::max(options.parallel, 1)));
  }
  const char* prompt_param = chat ? "messages" : "prompt";
  for (const auto& p : prompts) {
    if (p.empty()) bad_param(prompt_param, "the prompt is empty (no tokens)");
    if (static_cast<int64_t>(p.size()) >= info.n_ctx) {
      bad_param(prompt_param,
                fmt::format("the prompt has {} tokens, the context holds {}: shorten it", p.size(), info.n_ctx),
                "context_length_exceeded");
    }
    if (params.max_tokens > 0 && static_cast<int64_t>(p.size()) + params.max_tokens > info.n_ctx) {
      bad_param(chat ? (body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens") : "max_tokens",
                fmt::format("the prompt has {} tokens and max_tokens is {}: together {}, the context holds {}",
                            p.size(), params.max_tokens, p.size() + static_cast<size_t>(params.max_tokens), info.n_ctx),
                "context_length_exceeded");
    }
  }

  std::function<std::unique_ptr<TokenConstraint>()> constraint;
  if (params.format != ResponseFormat::Text) {
    try {
      constraint = backend->json_constraint(params.format == ResponseFormat::JsonSchema ? params.schema : nlohmann::ordered_json());
    } catch (const Error& e) {
      bad_param(params.format == ResponseFormat::JsonSchema ? "response_format.json_schema.schema" : "response_format",
                e.what(), "unsupported_schema");
    }
  }
  if (!params.seeded) {
    thread_local std::mt19937_64 rng(std::random_device{}());
    params.sampling.seed = rng();
  }

  auto guard = in_flight_guard();
  auto subs = std::make_shared<std::vector<Submitted>>();
  auto release = [this, subs] {
    for (Submitted& s : *subs) {
      if (!s.done) s.handle->cancel();
      untrack(s.handle);
    }
  };
  try {
    for (size_t i = 0; i < prompts.size(); ++i) {
      GenerateRequest g;
      g.prompt = std::move(prompts[i]);
      g.n = params.n;
      g.max_tokens = params.max_tokens;
      g.sampling = params.sampling;
      g.stop = params.stop;
      g.logprobs = params.logprobs;
      g.make_constraint = constraint;
      if (options.request_timeout.count() > 0) g.deadline = Clock::now() + options.request_timeout;
      Submitted s;
      s.handle = backend->submit(std::move(g));
      s.choice0 = static_cast<int32_t>(i) * params.n;
      track(s.handle);
      subs->push_back(std::move(s));
    }
  } catch (...) {
    release();
    throw;
  }

  const ResponseIds ids{new_id(chat ? "chatcmpl-" : "cmpl-"), unix_now(), info.id};
  if (t_conn) t_conn->record.id = ids.id;
  const size_t n_choices = subs->size() * static_cast<size_t>(params.n);
  const TokenBytesFn token_bytes = [backend](int32_t t) { return backend->token_bytes(t); };
  const double price = info.price_per_cpu_hour;

  if (!params.stream) {
    std::vector<ChoiceResult> choices(n_choices);
    RequestTotals totals;
    totals.price_per_cpu_hour = price;
    std::string error;
    bool first = true;
    ConnStream* stream = t_conn ? t_conn->stream : nullptr;
    const bool complete = pump(
        *subs,
        [&](size_t i, Event& ev) {
          const Submitted& s = (*subs)[i];
          const size_t c = static_cast<size_t>(s.choice0 + ev.choice);
          switch (ev.kind) {
            case Event::Kind::Delta:
              if (c < choices.size()) {
                choices[c].text += ev.text;
                if (params.logprobs >= 0) {
                  for (auto& t : ev.tokens) choices[c].tokens.push_back(std::move(t));
                }
              }
              break;
            case Event::Kind::Finished:
              if (c < choices.size()) choices[c].finish_reason = ev.finish_reason;
              break;
            case Event::Kind::Done:
              add_totals(totals, ev, first);
              first = false;
              break;
            case Event::Kind::Error:
              error = ev.message;
              break;
          }
          return true;
        },
        [stream] { return stream == nullptr || stream->peer_alive(); });
    release();
    if (t_conn) {
      t_conn->record.prompt_tokens = totals.usage.prompt_tokens;
      t_conn->record.completion_tokens = totals.usage.completion_tokens;
      t_conn->record.cached_tokens = totals.usage.cached_tokens;
    }
    if (!complete) {
      res.status = 499;  // nobody reads it; the log and metrics say what happened
      return;
    }
    if (!error.empty()) throw server_error(error);
    metrics.observe_generation(totals.cost, totals.usage.completion_tokens);
    send_json(res, 200,
              chat ? chat_completion_json(ids, choices, totals, params.logprobs, token_bytes)
                   : text_completion_json(ids, choices, prompt_bytes, params.n, totals, params.logprobs, token_bytes));
    return;
  }

  // Streaming: the chunks are written from httplib's content provider, on this same worker thread,
  // after the handler returns.
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, subs, params, ids, chat, n_choices, token_bytes, price, prompt_bytes, guard](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string s = sse(j);
          return sink.write(s.data(), s.size());
        };
        const char* object = chat ? "chat.completion.chunk" : "text_completion";
        auto chunk = [&](json choice) {
          return json{{"id", ids.id}, {"object", object}, {"created", ids.created}, {"model", ids.model},
                      {"system_fingerprint", nullptr}, {"choices", json::array({std::move(choice)})}};
        };
        if (chat) {
          for (size_t c = 0; c < n_choices; ++c) {
            if (!send(chunk({{"index", c}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr},
                             {"finish_reason", nullptr}}))) {
              for (Submitted& s : *subs) s.handle->cancel();
              return false;
            }
          }
        }
        std::vector<size_t> offsets(n_choices, 0);
        for (size_t c = 0; c < n_choices; ++c) {
          const size_t p = c / static_cast<size_t>(std::max(params.n, 1));
          offsets[c] = p < prompt_bytes.size() ? prompt_bytes[p] : 0;
        }
        RequestTotals totals;
        totals.price_per_cpu_hour = price;
        bool first = true;
        std::string error;
        const bool complete = pump(
            *subs,
            [&](size_t i, Event& ev) {
              const size_t c = static_cast<size_t>((*subs)[i].choice0 + ev.choice);
              switch (ev.kind) {
                case Event::Kind::Delta: {
                  const bool with_lp = params.logprobs >= 0 && !ev.tokens.empty();
                  if (ev.text.empty() && !with_lp) return true;
                  json lp = nullptr;
                  if (with_lp) {
                    lp = chat ? chat_logprobs_json(ev.tokens, params.logprobs, token_bytes)
                              : completion_logprobs_json(ev.tokens, params.logprobs, offsets[c], token_bytes);
                    for (const auto& t : ev.tokens) offsets[c] += t.bytes.size();
                  }
                  if (chat) {
                    return send(chunk({{"index", c}, {"delta", {{"content", ev.text}}}, {"logprobs", lp},
                                       {"finish_reason", nullptr}}));
                  }
                  return send(chunk({{"index", c}, {"text", ev.text}, {"logprobs", lp}, {"finish_reason", nullptr}}));
                }
                case Event::Kind::Finished:
                  if (chat) {
                    return send(chunk({{"index", c}, {"delta", json::object()}, {"logprobs", nullptr},
                                       {"finish_reason", ev.finish_reason}}));
                  }
                  return send(chunk({{"index", c}, {"text", ""}, {"logprobs", nullptr},
                                     {"finish_reason", ev.finish_reason}}));
                case Event::Kind::Done:
                  add_totals(totals, ev, first);
                  first = false;
                  return true;
                case Event::Kind::Error:
                  error = ev.message;
                  return true;
              }
              return true;
            },
            [&sink] { return sink.is_writable(); });
        if (t_conn) {
          t_conn->record.prompt_tokens = totals.usage.prompt_tokens;
          t_conn->record.completion_tokens = totals.usage.completion_tokens;
          t_conn->record.cached_tokens = totals.usage.cached_tokens;
        }
        if (!complete) return false;
        if (!error.empty()) {
          send(error_json(server_error(error)));
        } else {
          metrics.observe_generation(totals.cost, totals.usage.completion_tokens);
          if (params.include_usage) {
            json last = chunk(nullptr);
            last["choices"] = json::array();
            last["usage"] = usage_json(totals.usage);
            last["squeeze"] = squeeze_json(totals);
            if (!send(last)) return false;
          }
        }
        const std::string done = "data: [DONE]\n\n";
        if (!sink.write(done.data(), done.size())) return false;
        sink.done();
        return true;
      },
      [release](bool) { release(); });
}

void Server::Impl::handle_embeddings(const std::string& raw, httplib::Response& res) {
  auto backend = ready_backend();
  const ModelInfo info = backend->model_info();
  const nlohmann::ordered_json body = parse_body(raw);
  if (options.log_prompts && t_conn) {
    if (const auto it = body.find("input"); it != body.end()) {
      t_conn->record.prompt = dump_json(*it).substr(0, size_t{64} << 10);
    }
  }
  EmbeddingRequest r = parse_embedding_request(body, ModelLimits{info.n_vocab, info.n_ctx});
  check_model(*backend, r.model);
  std::vector<std::vector<int32_t>> inputs;
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    PromptInput& in = r.inputs[i];
    const std::string param = r.inputs.size() == 1 ? "input" : fmt::format("input[{}]", i);
    if (!in.is_tokens && info.max_token_bytes > 0 &&
        in.text.size() > static_cast<size_t>(info.n_ctx) * static_cast<size_t>(info.max_token_bytes)) {
      bad_param(param, fmt::format("the input has {} bytes, more than the context of {} tokens can hold", in.text.size(),
                                   info.n_ctx),
                "context_length_exceeded");
    }
    inputs.push_back(in.is_tokens ? std::move(in.tokens) : backend->tokenize_text(in.text));
    if (inputs.back().empty()) bad_param(param, "the input has no tokens");
    if (static_cast<int64_t>(inputs.back().size()) > info.n_ctx) {
      bad_param(param, fmt::format("the input has {} tokens, the context holds {}", inputs.back().size(), info.n_ctx),
                "context_length_exceeded");
    }
  }
  auto guard = in_flight_guard();
  std::vector<Submitted> subs;
  auto release = [&] {
    for (Submitted& s : subs) {
      if (!s.done) s.handle->cancel();
      untrack(s.handle);
    }
  };
  std::vector<std::vector<float>> vectors(inputs.size());
  std::string error;
  int32_t prompt_tokens = 0;
  bool complete = false;
  try {
    for (auto& in : inputs) {
      Submitted s;
      s.handle = backend->submit_embedding(std::move(in));
      track(s.handle);
      subs.push_back(std::move(s));
    }
    ConnStream* stream = t_conn ? t_conn->stream : nullptr;
    complete = pump(
        subs,
        [&](size_t i, Event& ev) {
          if (ev.kind == Event::Kind::Done) {
            vectors[i] = std::move(ev.embedding);
            prompt_tokens += ev.usage.prompt_tokens;
          } else if (ev.kind == Event::Kind::Error) {
            error = ev.message;
          }
          return true;
        },
        [stream] { return stream == nullptr || stream->peer_alive(); });
  } catch (...) {
    release();
    throw;
  }
  release();
  if (t_conn) t_conn->record.prompt_tokens = prompt_tokens;
  if (!complete) {
    res.status = 499;
    return;
  }
  if (!error.empty()) throw server_error(error);
  send_json(res, 200, embeddings_json(info.id, vectors, r.base64, prompt_tokens));
}

}  // namespace sq::serve
