// The HTTP layer against a fake backend: real HTTP over a real socket (httplib's client, and raw
// sockets where a client must misbehave), every error status, the response shapes OpenAI's clients
// parse, SSE framing, client disconnects and the slow-client deadline. The fake scripts the
// scheduler's events, so these tests pin the HTTP layer alone; tests/serve/openai_client_test.cpp
// runs the official client against the real model.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "serve/openai.h"
#include "serve/server.h"

namespace sq::serve {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Tokens of the fake: id = byte + 3 (0 pad, 1 BOS, 2 EOS).
constexpr int32_t kBos = 1;
constexpr int32_t kVocab = 259;

class FakeHandle : public RequestHandle {
 public:
  bool next(Event& event, std::chrono::milliseconds wait) override {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, wait, [&] { return !events_.empty(); })) return false;
    event = std::move(events_.front());
    events_.pop_front();
    return true;
  }
  void cancel() override { cancelled_ = true; }
  void push(Event e) {
    {
      std::lock_guard lock(mutex_);
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }
  std::atomic<bool> cancelled_{false};

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

// Each choice answers `reply` one byte (token) at a time, cut to max_tokens; choice i starts with
// the digit i so that choices differ. With `token_delay` a thread produces the events at that pace
// and stops at cancel().
class FakeBackend : public Backend {
 public:
  std::string reply = "Hello there, friend.";
  std::chrono::milliseconds token_delay{0};
  bool queue_full = false;
  int32_t n_ctx = 64;
  int32_t max_token_bytes = 0;
  mutable std::atomic<int> tokenized{0};

  ~FakeBackend() override {
    for (auto& t : threads_) t.join();
  }

  ModelInfo model_info() const override {
    ModelInfo m;
    m.id = "fake";
    m.created = 1700000000;
    m.n_ctx = n_ctx;
    m.n_vocab = kVocab;
    m.n_embd = 4;
    m.price_per_cpu_hour = 0.5;
    m.max_token_bytes = max_token_bytes;
    return m;
  }
  std::vector<int32_t> tokenize_chat(const nlohmann::ordered_json& messages) const override {
    std::string text;
    for (const auto& m : messages) {
      if (m["content"] == "refuse") fail<InvalidArgument>("the template refuses this conversation");
      text += m["role"].get<std::string>() + ": " + m["content"].get<std::string>() + "\n";
    }
    return tokenize_text(text);
  }
  std::vector<int32_t> tokenize_text(std::string_view text) const override {
    ++tokenized;
    std::vector<int32_t> ids{kBos};
    for (char c : text) ids.push_back(static_cast<uint8_t>(c) + 3);
    return ids;
  }
  std::string token_bytes(int32_t token) const override {
    return token >= 3 ? std::string(1, static_cast<char>(token - 3)) : std::string();
  }
  std::function<std::unique_ptr<TokenConstraint>()> json_constraint(const nlohmann::ordered_json& schema) const override {
    if (schema.is_object() && schema.contains("x-unsupported")) fail<InvalidArgument>("schema: unsupported keyword");
    last_schema = schema;
    return [] { return std::unique_ptr<TokenConstraint>(); };
  }

  std::shared_ptr<RequestHandle> submit(GenerateRequest request) override {
    if (queue_full) throw QueueFull("64 requests are waiting");
    auto h = std::make_shared<FakeHandle>();
    {
      std::lock_guard lock(mutex_);
      requests.push_back(request);
      handles.push_back(h);
    }
    auto produce = [this, h, request] {
      Usage usage;
      usage.prompt_tokens = static_cast<int32_t>(request.prompt.size());
      usage.cached_tokens = 2;
      for (int32_t c = 0; c < request.n; ++c) {
        const std::string text = std::to_string(c) + reply;
        int32_t produced = 0;
        std::string finish = "stop";
        for (char ch : text) {
          if (request.max_tokens >= 0 && produced == request.max_tokens) {
            finish = "length";
            break;
          }
          if (h->cancelled_) {
            finish = "cancelled";
            break;
          }
          if (token_delay.count() > 0) std::this_thread::sleep_for(token_delay);
          Event d;
          d.choice = c;
          d.text = std::string(1, ch);
          SampledToken t;
          t.token = static_cast<uint8_t>(ch) + 3;
          t.bytes = d.text;
          t.logprob = -0.5f;
          if (request.logprobs > 0) {
            for (int32_t k = 0; k < request.logprobs; ++k) t.top.push_back({'a' + 3 + k, -1.0f - static_cast<float>(k)});
          }
          d.tokens.push_back(t);
          h->push(std::move(d));
          ++produced;
        }
        usage.completion_tokens += produced;
        Event f;
        f.kind = Event::Kind::Finished;
        f.choice = c;
        f.finish_reason = finish;
        h->push(std::move(f));
      }
      Event done;
      done.kind = Event::Kind::Done;
      done.usage = usage;
      done.cost.ttft_seconds = 0.01;
      done.cost.total_seconds = 0.05;
      done.cost.generation_tps = 100;
      done.cost.cpu_seconds = 0.02;
      done.cost.price = 0.02 / 3600 * 0.5;
      h->push(std::move(done));
    };
    if (token_delay.count() > 0) {
      std::lock_guard lock(mutex_);
      threads_.emplace_back(produce);
    } else {
      produce();
    }
    return h;
  }

  std::shared_ptr<RequestHandle> submit_embedding(std::vector<int32_t> tokens) override {
    if (queue_full) throw QueueFull("64 requests are waiting");
    auto h = std::make_shared<FakeHandle>();
    Event done;
    done.kind = Event::Kind::Done;
    done.usage.prompt_tokens = static_cast<int32_t>(tokens.size());
    // Values whose float32 bits are not round numbers, so that base64 decoding is really checked.
    done.embedding = {0.1f * static_cast<float>(tokens.size()), -1.0f / 3.0f, 1e-7f, 12345.678f};
    h->push(std::move(done));
    return h;
  }

  SchedulerMetrics metrics() const override {
    SchedulerMetrics m;
    m.requests_total = static_cast<int64_t>(requests.size());
    m.prompt_tokens_total = 10;
    m.cached_prompt_tokens_total = 4;
    m.kv_blocks_total = 32;
    m.kv_blocks_used = 3;
    m.parallel_regions_total = 120;
    m.parallel_regions_alone_total = 7;
    return m;
  }

  GenerateRequest last_request() {
    std::lock_guard lock(mutex_);
    return requests.back();
  }

  std::mutex mutex_;
  std::vector<GenerateRequest> requests;
  std::vector<std::shared_ptr<FakeHandle>> handles;
  mutable nlohmann::ordered_json last_schema;

 private:
  std::vector<std::thread> threads_;
};

class ServerTest : public ::testing::Test {
 protected:
  void start(ServerOptions options = {}, bool ready = true) {
    options.port = 0;
    options.log = [this](const std::string& line) {
      std::lock_guard lock(log_mutex_);
      log_.push_back(line);
    };
    server_ = std::make_unique<Server>(options);
    server_->start();
    if (ready) server_->set_backend(backend_);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(10, 0);
  }
  void TearDown() override {
    if (server_) server_->stop(1000ms);
  }

  json post(const std::string& path, const json& body, int expected_status, const httplib::Headers& headers = {}) {
    return post_raw(path, body.dump(), expected_status, headers);
  }
  json post_raw(const std::string& path, const std::string& body, int expected_status,
                const httplib::Headers& headers = {}) {
    auto r = client_->Post(path.c_str(), headers, body, "application/json");
    EXPECT_TRUE(r) << "no response from " << path;
    if (!r) return {};
    EXPECT_EQ(r->status, expected_status) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    return json::parse(r->body);
  }
  // An error response in OpenAI's shape.
  static void expect_error(const json& body, const std::string& type, const std::string& param) {
    ASSERT_TRUE(body.contains("error")) << body;
    const json& e = body["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << body;
    EXPECT_EQ(e["type"], type) << body;
    if (param.empty()) {
      EXPECT_TRUE(e["param"].is_null()) << body;
    } else {
      EXPECT_EQ(e["param"], param) << body;
    }
    EXPECT_TRUE(e.contains("code")) << body;
  }

  std::shared_ptr<FakeBackend> backend_ = std::make_shared<FakeBackend>();
  std::unique_ptr<Server> server_;
  std::unique_ptr<httplib::Client> client_;
  std::mutex log_mutex_;
  std::vector<std::string> log_;
};

json chat_body(const std::string& content = "hi") {
  return json{{"model", "fake"}, {"messages", json::array({{{"role", "user"}, {"content", content}}})}};
}

// Splits an SSE stream into its data payloads, checking the framing: every event is one
// "data: " line followed by a blank line.
std::vector<std::string> sse_events(const std::string& stream) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < stream.size()) {
    const size_t end = stream.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event at " << pos << ": " << stream.substr(pos);
    if (end == std::string::npos) break;
    const std::string event = stream.substr(pos, end - pos);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    EXPECT_EQ(event.find('\n'), std::string::npos) << event;
    out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

// RFC 4648 decoding, written here rather than borrowed from the code under test.
std::vector<uint8_t> base64_decode(const std::string& s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') break;
    const int v = value(c);
    EXPECT_GE(v, 0) << "bad base64 character " << c;
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  return out;
}

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  return fd;
}

TEST_F(ServerTest, ModelsListAndLookup) {
  start();
  auto r = client_->Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "fake");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["created"], 1700000000);
  EXPECT_EQ(j["data"][0]["owned_by"], "squeeze");
  r = client_->Get("/v1/models/fake");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["id"], "fake");
  r = client_->Get("/v1/models/gpt-4");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  expect_error(json::parse(r->body), "invalid_request_error", "model");
}

TEST_F(ServerTest, LoadingAnswers503UntilTheBackendIsSet) {
  start({}, /*ready=*/false);
  auto r = client_->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json::parse(r->body)["status"], "loading");
  json e = post("/v1/chat/completions", chat_body(), 503);
  expect_error(e, "server_error", "");
  server_->set_backend(backend_);
  r = client_->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["status"], "ok");
  post("/v1/chat/completions", chat_body(), 200);
}

TEST_F(ServerTest, LoadErrorIsReported) {
  start({}, false);
  server_->set_load_error("no such file");
  auto r = client_->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(json::parse(r->body)["status"], "error");
  json e = post("/v1/completions", json{{"prompt", "x"}}, 503);
  EXPECT_NE(e["error"]["message"].get<std::string>().find("no such file"), std::string::npos);
}

TEST_F(ServerTest, ChatCompletionShape) {
  start();
  json body = chat_body();
  body["max_tokens"] = 5;
  const json j = post("/v1/chat/completions", body, 200);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["model"], "fake");
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["message"]["role"], "assistant");
  EXPECT_EQ(c["message"]["content"], "0Hell");
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_TRUE(c["logprobs"].is_null());
  const int prompt = static_cast<int>(backend_->tokenize_chat(json::array({{{"role", "user"}, {"content", "hi"}}})).size());
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt);
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_EQ(j["usage"]["total_tokens"], prompt + 5);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  EXPECT_DOUBLE_EQ(j["squeeze"]["ttft_ms"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(j["squeeze"]["generation_tps"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(j["squeeze"]["cpu_seconds"].get<double>(), 0.02);
  EXPECT_DOUBLE_EQ(j["squeeze"]["cost"].get<double>(), 0.02 / 3600 * 0.5);
  EXPECT_DOUBLE_EQ(j["squeeze"]["price_per_cpu_hour"].get<double>(), 0.5);

  // The request reached the backend with OpenAI's defaults.
  const GenerateRequest g = backend_->last_request();
  EXPECT_EQ(g.max_tokens, 5);
  EXPECT_EQ(g.n, 1);
  EXPECT_FLOAT_EQ(g.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(g.sampling.top_p, 1.0f);
  EXPECT_EQ(g.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(g.sampling.min_p, 0.0f);
  EXPECT_EQ(g.logprobs, -1);
  EXPECT_FALSE(g.make_constraint);
}

TEST_F(ServerTest, ParametersReachTheBackend) {
  start();
  json body = chat_body();
  body.update(json{{"n", 3}, {"max_completion_tokens", 7}, {"temperature", 0.25}, {"top_p", 0.5}, {"seed", 42},
                   {"stop", json::array({"a", "bc"})}, {"presence_penalty", 0.5}, {"frequency_penalty", -0.5},
                   {"logit_bias", {{"10", -100}, {"11", 5.5}}}, {"user", "u1"}, {"top_k", 7}, {"min_p", 0.1},
                   {"repeat_penalty", 1.1}, {"logprobs", true}, {"top_logprobs", 2}});
  const json j = post("/v1/chat/completions", body, 200);
  ASSERT_EQ(j["choices"].size(), 3u);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(j["choices"][c]["index"], c);
    EXPECT_EQ(j["choices"][c]["message"]["content"].get<std::string>()[0], '0' + c);
  }
  const GenerateRequest g = backend_->last_request();
  EXPECT_EQ(g.n, 3);
  EXPECT_EQ(g.max_tokens, 7);
  EXPECT_FLOAT_EQ(g.sampling.temperature, 0.25f);
  EXPECT_FLOAT_EQ(g.sampling.top_p, 0.5f);
  EXPECT_EQ(g.sampling.seed, 42u);
  EXPECT_EQ(g.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_FLOAT_EQ(g.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(g.sampling.frequency_penalty, -0.5f);
  ASSERT_EQ(g.sampling.logit_bias.size(), 2u);
  EXPECT_EQ(g.sampling.logit_bias[0], (std::pair<int32_t, float>{10, -100.0f}));
  EXPECT_EQ(g.sampling.logit_bias[1], (std::pair<int32_t, float>{11, 5.5f}));
  EXPECT_EQ(g.sampling.top_k, 7);
  EXPECT_FLOAT_EQ(g.sampling.min_p, 0.1f);
  EXPECT_FLOAT_EQ(g.sampling.repeat_penalty, 1.1f);
  EXPECT_EQ(g.logprobs, 2);
  // Usage counts the prompt once and the completion over all choices.
  EXPECT_EQ(j["usage"]["completion_tokens"], 21);
}

TEST_F(ServerTest, ChatLogprobsShape) {
  start();
  json body = chat_body();
  body.update(json{{"max_tokens", 3}, {"logprobs", true}, {"top_logprobs", 2}});
  const json j = post("/v1/chat/completions", body, 200);
  const json& lp = j["choices"][0]["logprobs"];
  ASSERT_TRUE(lp["content"].is_array());
  ASSERT_EQ(lp["content"].size(), 3u);
  const json& first = lp["content"][0];
  EXPECT_EQ(first["token"], "0");
  EXPECT_DOUBLE_EQ(first["logprob"].get<double>(), -0.5);
  EXPECT_EQ(first["bytes"], json::array({'0'}));
  ASSERT_EQ(first["top_logprobs"].size(), 2u);
  EXPECT_EQ(first["top_logprobs"][0]["token"], "a");
  EXPECT_DOUBLE_EQ(first["top_logprobs"][0]["logprob"].get<double>(), -1.0);
  EXPECT_EQ(first["top_logprobs"][1]["bytes"], json::array({'b'}));
}

TEST_F(ServerTest, CompletionLogprobsShape) {
  start();
  const json j = post("/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 4}, {"logprobs", 2}}, 200);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["text"], "0Hel");
  EXPECT_EQ(c["finish_reason"], "length");
  const json& lp = c["logprobs"];
  EXPECT_EQ(lp["tokens"], json::array({"0", "H", "e", "l"}));
  ASSERT_EQ(lp["token_logprobs"].size(), 4u);
  EXPECT_DOUBLE_EQ(lp["token_logprobs"][0].get<double>(), -0.5);
  // The dict holds the 2 best alternatives and the sampled token.
  ASSERT_EQ(lp["top_logprobs"].size(), 4u);
  EXPECT_EQ(lp["top_logprobs"][0].size(), 3u);
  EXPECT_DOUBLE_EQ(lp["top_logprobs"][0]["b"].get<double>(), -2.0);
  EXPECT_DOUBLE_EQ(lp["top_logprobs"][0]["0"].get<double>(), -0.5);
  // Offsets count from the start of the prompt ("Once" is 4 bytes).
  EXPECT_EQ(lp["text_offset"], json::array({4, 5, 6, 7}));
}

TEST_F(ServerTest, CompletionPromptForms) {
  start();
  // Several prompts: n choices each, in prompt order.
  json j = post("/v1/completions", json{{"prompt", json::array({"a", "b"})}, {"n", 2}, {"max_tokens", 2}}, 200);
  ASSERT_EQ(j["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(j["choices"][i]["index"], i);
  EXPECT_EQ(j["choices"][1]["text"], "1H");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 4);  // BOS + one byte, twice
  // Token ids go to the backend as they are.
  post("/v1/completions", json{{"prompt", json::array({5, 6, 7})}, {"max_tokens", 1}}, 200);
  EXPECT_EQ(backend_->last_request().prompt, (std::vector<int32_t>{5, 6, 7}));
  post("/v1/completions", json{{"prompt", json::array({json::array({8}), json::array({9, 10})})}, {"max_tokens", 1}},
       200);
  EXPECT_EQ(backend_->last_request().prompt, (std::vector<int32_t>{9, 10}));
  expect_error(post("/v1/completions", json{{"prompt", json::array({5, kVocab})}}, 400), "invalid_request_error",
               "prompt[1]");
  expect_error(post("/v1/completions", json{{"prompt", json::array()}}, 400), "invalid_request_error", "prompt");
  expect_error(post("/v1/completions", json{{"prompt", 5}}, 400), "invalid_request_error", "prompt");
  expect_error(post("/v1/completions", json{{"max_tokens", 5}}, 400), "invalid_request_error", "prompt");
}

TEST_F(ServerTest, ChatStreamFraming) {
  start();
  json body = chat_body();
  body.update(json{{"stream", true}, {"stream_options", {{"include_usage", true}}}, {"max_tokens", 6}, {"n", 2}});
  auto r = client_->Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const auto events = sse_events(r->body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text[2];
  std::string finish[2];
  bool role_seen[2] = {false, false};
  json usage;
  std::string id;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i]);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    if (id.empty()) id = c["id"];
    EXPECT_EQ(c["id"], id) << "every chunk carries the same id";
    EXPECT_EQ(c["model"], "fake");
    if (c.contains("usage") && !c["usage"].is_null()) {
      EXPECT_EQ(i + 2, events.size()) << "the usage chunk comes last";
      EXPECT_TRUE(c["choices"].empty());
      usage = c["usage"];
      EXPECT_TRUE(c["squeeze"].is_object());
      continue;
    }
    ASSERT_EQ(c["choices"].size(), 1u);
    const json& ch = c["choices"][0];
    const int k = ch["index"];
    if (ch["delta"].contains("role")) {
      EXPECT_EQ(ch["delta"]["role"], "assistant");
      EXPECT_TRUE(text[k].empty()) << "the role comes first";
      role_seen[k] = true;
    }
    EXPECT_TRUE(role_seen[k]);
    if (ch["delta"].contains("content")) text[k] += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) finish[k] = ch["finish_reason"];
  }
  EXPECT_EQ(text[0], "0Hello");
  EXPECT_EQ(text[1], "1Hello");
  EXPECT_EQ(finish[0], "length");
  EXPECT_EQ(finish[1], "length");
  ASSERT_TRUE(usage.is_object());
  EXPECT_EQ(usage["completion_tokens"], 12);
}

TEST_F(ServerTest, CompletionStreamWithoutUsage) {
  start();
  auto r = client_->Post("/v1/completions",
                         json{{"prompt", "x"}, {"stream", true}, {"max_tokens", 3}, {"logprobs", 1}}.dump(),
                         "application/json");
  ASSERT_TRUE(r);
  const auto events = sse_events(r->body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::vector<int> offsets;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i]);
    EXPECT_EQ(c["object"], "text_completion");
    EXPECT_FALSE(c.contains("usage") && !c["usage"].is_null());
    text += c["choices"][0]["text"].get<std::string>();
    if (!c["choices"][0]["logprobs"].is_null()) {
      for (int o : c["choices"][0]["logprobs"]["text_offset"]) offsets.push_back(o);
    }
  }
  EXPECT_EQ(text, "0He");
  EXPECT_EQ(offsets, (std::vector<int>{1, 2, 3}));
}

TEST_F(ServerTest, ResponseFormatBuildsAConstraint) {
  start();
  json body = chat_body();
  body["response_format"] = {{"type", "json_object"}};
  post("/v1/chat/completions", body, 200);
  EXPECT_TRUE(backend_->last_request().make_constraint);
  EXPECT_TRUE(backend_->last_schema.is_null());
  const json schema = {{"type", "object"}, {"properties", {{"a", {{"type", "integer"}}}}}};
  body["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", schema}}}};
  post("/v1/chat/completions", body, 200);
  EXPECT_EQ(backend_->last_schema, schema);
  body["response_format"]["json_schema"]["schema"]["x-unsupported"] = true;
  expect_error(post("/v1/chat/completions", body, 400), "invalid_request_error", "response_format.json_schema.schema");
  body["response_format"] = {{"type", "yaml"}};
  expect_error(post("/v1/chat/completions", body, 400), "invalid_request_error", "response_format.type");
  // The schema reaches the constraint with its keys in the client's order, not sorted.
  post_raw("/v1/chat/completions",
           R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema",
               "json_schema": {"name": "x", "schema": {"type": "object", "properties":
               {"zeta": {"type": "string"}, "alpha": {"type": "integer"}, "mid": {"type": "boolean"}}}}}})",
           200);
  std::vector<std::string> keys;
  for (const auto& [k, v] : backend_->last_schema["properties"].items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"zeta", "alpha", "mid"}));
}

TEST_F(ServerTest, BadParametersAre400NamingTheParameter) {
  start();
  struct Case {
    json patch;
    std::string param;
  };
  const std::vector<Case> cases = {
      {{{"temperature", "hot"}}, "temperature"},
      {{{"temperature", 2.5}}, "temperature"},
      {{{"top_p", -0.1}}, "top_p"},
      {{{"max_tokens", -1}}, "max_tokens"},
      {{{"max_tokens", 0}}, "max_tokens"},
      {{{"max_tokens", 1000000000000}}, "max_tokens"},
      {{{"max_tokens", 1.5}}, "max_tokens"},
      {{{"n", 0}}, "n"},
      {{{"n", 100}}, "n"},
      {{{"n", 5}}, "n"},  // above --parallel (4)
      {{{"stop", 5}}, "stop"},
      {{{"stop", json::array({"ok", 3})}}, "stop[1]"},
      {{{"stop", ""}}, "stop"},
      {{{"presence_penalty", 3}}, "presence_penalty"},
      {{{"frequency_penalty", "x"}}, "frequency_penalty"},
      {{{"logit_bias", {{"abc", 1}}}}, "logit_bias"},
      {{{"logit_bias", {{"5", 200}}}}, "logit_bias.5"},
      {{{"logit_bias", {{"999999", 1}}}}, "logit_bias"},
      {{{"logit_bias", json::array()}}, "logit_bias"},
      {{{"seed", "x"}}, "seed"},
      {{{"top_k", -1}}, "top_k"},
      {{{"min_p", 2}}, "min_p"},
      {{{"repeat_penalty", 0}}, "repeat_penalty"},
      {{{"logprobs", 1}}, "logprobs"},
      {{{"top_logprobs", 3}}, "top_logprobs"},
      {{{"logprobs", true}, {"top_logprobs", 21}}, "top_logprobs"},
      {{{"stream", "yes"}}, "stream"},
      {{{"stream_options", {{"include_usage", true}}}}, "stream_options"},
      {{{"user", 5}}, "user"},
      {{{"messages", "hi"}}, "messages"},
      {{{"messages", json::array()}}, "messages"},
      {{{"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}}, "messages[0].role"},
      {{{"messages", json::array({{{"content", "x"}}})}}, "messages[0].role"},
      {{{"messages", json::array({{{"role", "user"}, {"content", 5}}})}}, "messages[0].content"},
      {{{"messages", json::array({{{"role", "user"}, {"content", json::array({{{"type", "image_url"}}})}}})}},
       "messages[0].content[0].type"},
      {{{"messages", json::array({{{"role", "user"}, {"content", "refuse"}}})}}, "messages"},
      {{{"tools", json::array({{{"type", "function"}}})}}, "tools"},
      {{{"model", 5}}, "model"},
  };
  for (const Case& c : cases) {
    json body = chat_body();
    body.update(c.patch);
    SCOPED_TRACE(body.dump());
    expect_error(post("/v1/chat/completions", body, 400), "invalid_request_error", c.param);
  }
  // A JSON null is an absent field.
  json body = chat_body();
  body.update(json{{"temperature", nullptr}, {"stop", nullptr}, {"max_tokens", nullptr}});
  post("/v1/chat/completions", body, 200);
  // Content given as text parts is joined.
  body = chat_body();
  body["messages"][0]["content"] = json::array({{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}});
  post("/v1/chat/completions", body, 200);
  EXPECT_EQ(backend_->last_request().prompt, backend_->tokenize_text("user: a\nb\n"));
}

TEST_F(ServerTest, MalformedBodiesAre400) {
  start();
  // Deep nesting is refused while parsing.
  const std::string deep = "{\"prompt\": \"x\", \"extra\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  const json d = post_raw("/v1/completions", deep, 400);
  expect_error(d, "invalid_request_error", "");
  EXPECT_NE(d["error"]["message"].get<std::string>().find("nests deeper"), std::string::npos) << d;
  expect_error(post_raw("/v1/chat/completions", "{\"model\": ", 400), "invalid_request_error", "");
  expect_error(post_raw("/v1/chat/completions", "[1, 2]", 400), "invalid_request_error", "");
  expect_error(post_raw("/v1/completions", "", 400), "invalid_request_error", "");
  // Invalid UTF-8 inside a string.
  expect_error(post_raw("/v1/completions", "{\"prompt\": \"a\xff\xfe\"}", 400), "invalid_request_error", "");
  expect_error(post_raw("/v1/embeddings", "nul", 400), "invalid_request_error", "");
}

TEST_F(ServerTest, ContextLimits) {
  start();
  // The fake's context is 64 tokens.
  json e = post("/v1/completions", json{{"prompt", std::string(80, 'x')}}, 400);
  expect_error(e, "invalid_request_error", "prompt");
  EXPECT_EQ(e["error"]["code"], "context_length_exceeded");
  e = post("/v1/completions", json{{"prompt", std::string(40, 'x')}, {"max_tokens", 30}}, 400);
  expect_error(e, "invalid_request_error", "max_tokens");
  e = post("/v1/embeddings", json{{"input", std::string(80, 'x')}}, 400);
  expect_error(e, "invalid_request_error", "input");
}

// A text longer than the context times the longest token cannot fit: refused untokenized.
TEST_F(ServerTest, OverlongTextIsRefusedBeforeTokenizing) {
  backend_->max_token_bytes = 2;
  start();
  for (const char* path : {"/v1/completions", "/v1/embeddings"}) {
    const json body = {{"prompt", std::string(200, 'x')}, {"input", std::string(200, 'x')}};
    const json e = post(path, body, 400);
    EXPECT_EQ(e["error"]["code"], "context_length_exceeded") << path;
  }
  const json e = post("/v1/chat/completions", chat_body(std::string(200, 'x')), 400);
  EXPECT_EQ(e["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(backend_->tokenized.load(), 0);
}

// `curl -d` sends application/x-www-form-urlencoded, whose bodies httplib itself caps at 8 KiB.
TEST_F(ServerTest, FormEncodedContentTypeIsReadAsJson) {
  backend_->n_ctx = 100000;
  start();
  auto r = client_->Post("/v1/completions", json{{"prompt", std::string(20000, 'x')}, {"max_tokens", 2}}.dump(),
                         "application/x-www-form-urlencoded");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(ServerTest, UnknownRouteAndModelAre404) {
  start();
  auto r = client_->Get("/v1/nothing");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  expect_error(json::parse(r->body), "invalid_request_error", "");
  r = client_->Get("/v1/chat/completions");  // wrong method
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  json body = chat_body();
  body["model"] = "gpt-4o";
  json e = post("/v1/chat/completions", body, 404);
  expect_error(e, "invalid_request_error", "model");
  EXPECT_EQ(e["error"]["code"], "model_not_found");
  e = post("/v1/embeddings", json{{"model", "other"}, {"input", "x"}}, 404);
  expect_error(e, "invalid_request_error", "model");
}

TEST_F(ServerTest, OversizedBodyIs413) {
  ServerOptions o;
  o.max_body_bytes = 4096;
  start(o);
  json body = chat_body(std::string(10000, 'x'));
  json e = post("/v1/chat/completions", body, 413);
  expect_error(e, "invalid_request_error", "");
  // The server goes on serving.
  post("/v1/chat/completions", chat_body(), 200);
}

TEST_F(ServerTest, ApiKeysAre401) {
  ServerOptions o;
  o.api_keys = {"sk-first", "sk-second-key"};
  start(o);
  json e = post("/v1/chat/completions", chat_body(), 401);
  expect_error(e, "invalid_request_error", "");
  EXPECT_EQ(e["error"]["code"], "invalid_api_key");
  e = post("/v1/chat/completions", chat_body(), 401, {{"Authorization", "Bearer sk-firs"}});
  EXPECT_EQ(e["error"]["code"], "invalid_api_key");
  post("/v1/chat/completions", chat_body(), 401, {{"Authorization", "Bearer sk-first-"}});
  post("/v1/chat/completions", chat_body(), 401, {{"Authorization", "sk-first"}});
  post("/v1/chat/completions", chat_body(), 200, {{"Authorization", "Bearer sk-first"}});
  post("/v1/chat/completions", chat_body(), 200, {{"Authorization", "Bearer sk-second-key"}});
  // A 401 is sent before the body is read; on a kept-alive connection that body must not be taken
  // for the next request: the server closes the connection after the 401 instead.
  const int fd = connect_to(server_->port());
  const std::string payload = chat_body().dump();
  std::string two;
  for (const char* auth : {"", "Authorization: Bearer sk-first\r\n"}) {
    two += std::string("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n") + auth +
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(payload.size()) + "\r\n\r\n" +
           payload;
  }
  ASSERT_EQ(::send(fd, two.data(), two.size(), MSG_NOSIGNAL), static_cast<ssize_t>(two.size()));
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(fd);
  EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
  EXPECT_EQ(got.find("HTTP/1.1", 1), std::string::npos) << "one response, then the connection closes: " << got;
  auto r = client_->Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  // Health stays open for load balancers.
  r = client_->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServerTest, QueueFullIs429) {
  start();
  backend_->queue_full = true;
  auto r = client_->Post("/v1/chat/completions", chat_body().dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  expect_error(json::parse(r->body), "rate_limit_error", "");
  json e = post("/v1/embeddings", json{{"input", "x"}}, 429);
  expect_error(e, "rate_limit_error", "");
}

TEST_F(ServerTest, EmbeddingsFloatAndBase64) {
  start();
  const json f = post("/v1/embeddings", json{{"input", json::array({"ab", "abcd"})}, {"encoding_format", "float"}}, 200);
  EXPECT_EQ(f["object"], "list");
  EXPECT_EQ(f["model"], "fake");
  ASSERT_EQ(f["data"].size(), 2u);
  EXPECT_EQ(f["data"][1]["index"], 1);
  EXPECT_EQ(f["data"][1]["object"], "embedding");
  EXPECT_EQ(f["usage"]["prompt_tokens"], 3 + 5);
  EXPECT_EQ(f["usage"]["total_tokens"], 3 + 5);
  const json b = post("/v1/embeddings", json{{"input", json::array({"ab", "abcd"})}, {"encoding_format", "base64"}}, 200);
  for (int i = 0; i < 2; ++i) {
    const std::vector<uint8_t> bytes = base64_decode(b["data"][i]["embedding"].get<std::string>());
    ASSERT_EQ(bytes.size(), 16u);
    for (int k = 0; k < 4; ++k) {
      // Little-endian float32, as the official clients read it.
      const uint32_t u = bytes[4 * k] | bytes[4 * k + 1] << 8 | bytes[4 * k + 2] << 16 |
                         static_cast<uint32_t>(bytes[4 * k + 3]) << 24;
      float v;
      std::memcpy(&v, &u, 4);
      EXPECT_EQ(v, f["data"][i]["embedding"][k].get<float>()) << i << "," << k;
    }
  }
  // Token-id inputs, and the errors.
  post("/v1/embeddings", json{{"input", json::array({5, 6})}}, 200);
  expect_error(post("/v1/embeddings", json{{"input", ""}}, 400), "invalid_request_error", "input");
  expect_error(post("/v1/embeddings", json{{"input", "x"}, {"encoding_format", "hex"}}, 400), "invalid_request_error",
               "encoding_format");
  expect_error(post("/v1/embeddings", json{{"input", "x"}, {"dimensions", 2}}, 400), "invalid_request_error",
               "dimensions");
  expect_error(post("/v1/embeddings", json::object(), 400), "invalid_request_error", "input");
}

TEST_F(ServerTest, ClientDisconnectCancelsTheRequest) {
  backend_->token_delay = 20ms;
  backend_->reply = std::string(200, 'z');
  start();
  const int fd = connect_to(server_->port());
  json body = chat_body();
  body["stream"] = true;
  const std::string payload = body.dump();
  const std::string request = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(payload.size()) + "\r\n\r\n" + payload;
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  char buf[512];
  ASSERT_GT(::recv(fd, buf, sizeof(buf), 0), 0);  // the stream has begun
  ::close(fd);
  const auto t0 = std::chrono::steady_clock::now();
  while (!backend_->handles.back()->cancelled_ && std::chrono::steady_clock::now() - t0 < 3s) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(backend_->handles.back()->cancelled_.load());

  // The same for a request that is not streamed.
  const int fd2 = connect_to(server_->port());
  body["stream"] = false;
  const std::string p2 = body.dump();
  const std::string r2 = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Content-Length: " + std::to_string(p2.size()) + "\r\n\r\n" + p2;
  ASSERT_EQ(::send(fd2, r2.data(), r2.size(), MSG_NOSIGNAL), static_cast<ssize_t>(r2.size()));
  std::this_thread::sleep_for(100ms);
  ::close(fd2);
  const auto t1 = std::chrono::steady_clock::now();
  while (!backend_->handles.back()->cancelled_ && std::chrono::steady_clock::now() - t1 < 3s) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(backend_->handles.back()->cancelled_.load());
}

TEST_F(ServerTest, SlowClientIsCutOffAndOthersAreServed) {
  ServerOptions o;
  o.read_deadline = 600ms;
  start(o);
  const int fd = connect_to(server_->port());
  const std::string request = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
  const auto t0 = std::chrono::steady_clock::now();
  bool cut = false;
  // One byte every 50 ms: each read succeeds long before any per-read timeout.
  for (size_t i = 0; i < request.size() + 100 && !cut; ++i) {
    const char c = i < request.size() ? request[i] : 'x';
    if (::send(fd, &c, 1, MSG_NOSIGNAL) != 1) cut = true;
    // Meanwhile the server answers everyone else.
    if (i == 5) post("/v1/chat/completions", chat_body(), 200);
    std::this_thread::sleep_for(50ms);
    char b;
    if (::recv(fd, &b, 1, MSG_DONTWAIT) == 0) cut = true;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  EXPECT_TRUE(cut);
  EXPECT_LT(seconds, 3.0);
  auto m = client_->Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("squeeze_http_read_deadline_total 1"), std::string::npos) << m->body;
}

TEST_F(ServerTest, MetricsInPrometheusFormat) {
  start();
  post("/v1/chat/completions", chat_body(), 200);
  post_raw("/v1/chat/completions", "{", 400);
  client_->Get("/nowhere");
  // A request is counted once its response is written, which may be just after the client read
  // it, on the thread that served it: wait for the counts of all three.
  auto counted = [](const std::string& body) {
    for (const char* key : {"route=\"/v1/chat/completions\",status=\"200\"",
                            "route=\"/v1/chat/completions\",status=\"400\"", "route=\"other\",status=\"404\""}) {
      if (body.find(key) == std::string::npos) return false;
    }
    return true;
  };
  auto r = client_->Get("/metrics");
  const auto t0 = std::chrono::steady_clock::now();
  while (r && !counted(r->body) && std::chrono::steady_clock::now() - t0 < 2s) {
    std::this_thread::sleep_for(10ms);
    r = client_->Get("/metrics");
  }
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  const std::string& m = r->body;
  for (const char* line : {"squeeze_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
                           "squeeze_http_requests_total{route=\"/v1/chat/completions\",status=\"400\"} 1",
                           "squeeze_http_requests_total{route=\"other\",status=\"404\"} 1",
                           "# TYPE squeeze_requests_total counter", "squeeze_requests_total 1",
                           "squeeze_kv_blocks_used 3", "squeeze_kv_blocks_free 29",
                           "squeeze_prefix_cache_hit_ratio 0.4", "squeeze_time_to_first_token_seconds_count 1",
                           "squeeze_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1", "squeeze_up 1",
                           "squeeze_parallel_regions_total 120", "squeeze_parallel_regions_alone_total 7"}) {
    EXPECT_NE(m.find(line), std::string::npos) << line << "\n" << m;
  }
  // One inter-token gap per generated token after the first: the fake backend sends "0" + reply,
  // a token per character.
  const std::string gaps = "squeeze_inter_token_latency_seconds_count " + std::to_string(backend_->reply.size());
  EXPECT_NE(m.find(gaps), std::string::npos) << gaps << "\n" << m;
#ifdef __linux__
  // The process's resident memory, in the standard gauge every Prometheus client library exports.
  const std::string rss = "\nprocess_resident_memory_bytes ";
  const size_t at = m.find(rss);
  ASSERT_NE(at, std::string::npos) << m;
  EXPECT_NE(m.find("# TYPE process_resident_memory_bytes gauge\n"), std::string::npos) << m;
  EXPECT_GT(std::stod(m.substr(at + rss.size())), 1e6) << "a process with a server running holds more than 1 MB";
#endif
  // Every sample line is "name{labels} value" or "name value".
  std::istringstream in(m);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    EXPECT_NO_THROW((void)std::stod(line.substr(sp + 1))) << line;
  }
}

TEST_F(ServerTest, AccessLogHasOneLinePerRequest) {
  start();
  post("/v1/completions", json{{"prompt", "secret prompt"}, {"max_tokens", 3}}, 200);
  client_->Get("/health");
  server_->stop(1000ms);
  std::lock_guard lock(log_mutex_);
  ASSERT_EQ(log_.size(), 2u);
  // Lines are written after each response, so their order may differ from the requests'.
  const size_t post_line = json::parse(log_[0])["method"] == "POST" ? 0 : 1;
  const json first = json::parse(log_[post_line]);
  EXPECT_EQ(first["method"], "POST");
  EXPECT_EQ(first["path"], "/v1/completions");
  EXPECT_EQ(first["status"], 200);
  EXPECT_EQ(first["completion_tokens"], 3);
  EXPECT_TRUE(first["ms"].is_number());
  EXPECT_EQ(log_[post_line].find("secret"), std::string::npos) << "no prompt text in the log";
  EXPECT_EQ(json::parse(log_[1 - post_line])["path"], "/health");
}

TEST_F(ServerTest, PromptsAreLoggedOnlyWhenAskedFor) {
  ServerOptions o;
  o.log_prompts = true;
  start(o);
  post("/v1/completions", json{{"prompt", "secret prompt"}, {"max_tokens", 1}}, 200);
  post("/v1/chat/completions", chat_body("secret chat"), 200);
  server_->stop(1000ms);
  std::lock_guard lock(log_mutex_);
  ASSERT_EQ(log_.size(), 2u);
  std::string all = log_[0] + log_[1];
  EXPECT_NE(all.find("secret prompt"), std::string::npos) << all;
  EXPECT_NE(all.find("secret chat"), std::string::npos) << all;
}

TEST_F(ServerTest, StopLetsRunningRequestsFinish) {
  backend_->token_delay = 10ms;
  start();
  std::thread t([&] {
    const json j = post("/v1/chat/completions", chat_body(), 200);
    EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  });
  const auto t0 = std::chrono::steady_clock::now();
  while (server_->in_flight() == 0 && std::chrono::steady_clock::now() - t0 < 2s) std::this_thread::sleep_for(1ms);
  server_->stop(5000ms);
  t.join();
  // Nothing is accepted any more.
  httplib::Client late("127.0.0.1", server_->port());
  EXPECT_FALSE(late.Get("/health"));
}

TEST_F(ServerTest, StopCancelsWhatOutlastsTheGrace) {
  backend_->token_delay = 50ms;
  backend_->reply = std::string(500, 'z');
  start();
  std::thread t([&] {
    auto r = client_->Post("/v1/chat/completions", chat_body().dump(), "application/json");
    if (r) {
      EXPECT_EQ(json::parse(r->body)["choices"][0]["finish_reason"], "cancelled");
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  while (server_->in_flight() == 0 && std::chrono::steady_clock::now() - t0 < 2s) std::this_thread::sleep_for(1ms);
  server_->stop(200ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  t.join();
}

}  // namespace
}  // namespace sq::serve
