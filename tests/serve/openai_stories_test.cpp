// The server on a real model (stories260K), over real HTTP: the greedy continuation equals
// llama2.c's reference text, streamed or not; stop strings cut it where the reference says;
// logprobs agree with greedy choice; a seed names the same text alone or amid other requests;
// embeddings are unit vectors whose base64 form decodes to the same floats; structured output
// parses; 32 streaming clients with random disconnects all end cleanly, and resident memory comes
// back near its level before the load. Also `squeeze chat`.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "serve/openai_backend.h"
#include "serve/server.h"
#include "support.h"

namespace sq::serve {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One server on stories260K for the whole suite: loading is quick, but the suite stays fast.
class Stories : public ::testing::Test {
 protected:
  static void TearDownTestSuite() {
    if (server_) server_->stop(2000ms);
    server_.reset();
    backend_.reset();
  }
  void SetUp() override {
    if (!server_) {
      const std::string model = test::shared_path("models/stories260K/stories260K.gguf");
      if (model.empty()) GTEST_SKIP() << "needs models/stories260K/stories260K.gguf from the shared data folder";
      EngineBackendOptions o;
      o.scheduler.n_ctx = 512;
      o.scheduler.parallel = 8;
      o.scheduler.queue_size = 64;
      o.scheduler.n_threads = 2;
      o.scheduler.price_per_cpu_hour = 0.36;
      backend_ = std::make_shared<EngineBackend>(Engine::load({model, ""}), o, nullptr);
      ServerOptions so;
      so.port = 0;
      so.parallel = 8;
      so.log = [](const std::string&) {};
      server_ = std::make_unique<Server>(so);
      server_->start();
      server_->set_backend(backend_);
    }
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(30, 0);
  }

  json post(const std::string& path, const json& body, int status = 200) {
    auto r = client_->Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(r);
    if (!r) return {};
    EXPECT_EQ(r->status, status) << r->body;
    return json::parse(r->body);
  }
  // The text of a streamed completion or chat, checking the SSE framing on the way.
  std::string stream_text(const std::string& path, json body, std::string* finish = nullptr) {
    body["stream"] = true;
    auto r = client_->Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(r);
    if (!r) return {};
    EXPECT_EQ(r->status, 200);
    std::string text;
    size_t pos = 0;
    bool done = false;
    while (pos < r->body.size()) {
      const size_t end = r->body.find("\n\n", pos);
      EXPECT_NE(end, std::string::npos);
      if (end == std::string::npos) break;
      const std::string ev = r->body.substr(pos, end - pos);
      pos = end + 2;
      EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
      if (ev == "data: [DONE]") {
        done = true;
        continue;
      }
      EXPECT_FALSE(done) << "nothing after [DONE]";
      const json c = json::parse(ev.substr(6));
      if (c["choices"].empty()) continue;
      const json& ch = c["choices"][0];
      if (ch.contains("text")) text += ch["text"].get<std::string>();
      if (ch.contains("delta") && ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
      if (finish != nullptr && !ch["finish_reason"].is_null()) *finish = ch["finish_reason"];
    }
    EXPECT_TRUE(done);
    return text;
  }

  static inline std::shared_ptr<EngineBackend> backend_;
  static inline std::unique_ptr<Server> server_;
  std::unique_ptr<httplib::Client> client_;
};

const char* kPrompt = "Once upon a time";

// AddressSanitizer keeps freed memory in quarantine (256 MiB by default): resident memory says
// nothing about leaks there.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

TEST_F(Stories, GreedyCompletionIsTheReferenceText) {
  SQ_REQUIRE_SHARED(expected_path, "models/stories260K/expected-once-upon-a-time.txt");
  const std::string expected = read_text(expected_path);
  const json body = {{"model", "stories260K"}, {"prompt", kPrompt}, {"max_tokens", 200}, {"temperature", 0}};
  const json j = post("/v1/completions", body);
  EXPECT_EQ(kPrompt + j["choices"][0]["text"].get<std::string>(), expected);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 200);
  EXPECT_GT(j["squeeze"]["cpu_seconds"].get<double>(), 0.0);
  EXPECT_NEAR(j["squeeze"]["cost"].get<double>(), j["squeeze"]["cpu_seconds"].get<double>() / 3600 * 0.36, 1e-12);
  std::string finish;
  EXPECT_EQ(kPrompt + stream_text("/v1/completions", body, &finish), expected);
  EXPECT_EQ(finish, "length");
}

TEST_F(Stories, StopStringCutsTheReference) {
  SQ_REQUIRE_SHARED(expected_path, "models/stories260K/expected-once-upon-a-time.txt");
  const std::string expected = read_text(expected_path).substr(std::strlen(kPrompt));
  const std::string stop = "named Lily";
  const size_t at = expected.find(stop);
  ASSERT_NE(at, std::string::npos);
  json body = {{"prompt", kPrompt}, {"max_tokens", 100}, {"temperature", 0}, {"stop", json::array({"zzz", stop})}};
  const json j = post("/v1/completions", body);
  EXPECT_EQ(j["choices"][0]["text"], expected.substr(0, at));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  // Streamed, the start of the stop string ("named") is held back and then dropped.
  std::string finish;
  EXPECT_EQ(stream_text("/v1/completions", body, &finish), expected.substr(0, at));
  EXPECT_EQ(finish, "stop");
}

TEST_F(Stories, GreedyLogprobsPickTheBestToken) {
  const json j = post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 20}, {"temperature", 0}, {"logprobs", 3}});
  const json& c = j["choices"][0];
  const json& lp = c["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 20u);
  std::string joined;
  for (size_t i = 0; i < 20; ++i) {
    const std::string tok = lp["tokens"][i];
    EXPECT_EQ(lp["text_offset"][i].get<size_t>(), std::strlen(kPrompt) + joined.size());
    joined += tok;
    const double chosen = lp["token_logprobs"][i];
    EXPECT_LE(chosen, 0.0);
    // Greedy: nothing among the alternatives beats the chosen token.
    EXPECT_GE(lp["top_logprobs"][i].size(), 3u);
    for (const auto& [t, v] : lp["top_logprobs"][i].items()) EXPECT_LE(v.get<double>(), chosen + 1e-6) << t;
    EXPECT_DOUBLE_EQ(lp["top_logprobs"][i][tok].get<double>(), chosen);
  }
  EXPECT_EQ(joined, c["text"]);

  const json k = post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Tell me a story"}}}},
                                               {"max_tokens", 8}, {"temperature", 0}, {"logprobs", true},
                                               {"top_logprobs", 2}});
  const json& content = k["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 8u);
  std::string text;
  for (const json& t : content) {
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_GE(t["top_logprobs"][0]["logprob"].get<double>(), t["top_logprobs"][1]["logprob"].get<double>());
    EXPECT_DOUBLE_EQ(t["top_logprobs"][0]["logprob"].get<double>(), t["logprob"].get<double>());
    std::string bytes;
    for (int b : t["bytes"]) bytes += static_cast<char>(b);
    text += bytes;
  }
  EXPECT_EQ(text, k["choices"][0]["message"]["content"]);
}

TEST_F(Stories, SeedGivesTheSameTextAloneOrInABatch) {
  auto body = [](int seed) {
    return json{{"messages", {{{"role", "user"}, {"content", "Lily and the ball"}}}}, {"max_tokens", 40},
                {"temperature", 1.0}, {"seed", seed}};
  };
  const std::string alone = post("/v1/chat/completions", body(7))["choices"][0]["message"]["content"];
  std::vector<std::string> texts(6);
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", server_->port());
      c.set_read_timeout(30, 0);
      auto r = c.Post("/v1/chat/completions", body(i == 3 ? 7 : 100 + i).dump(), "application/json");
      if (r && r->status == 200) texts[i] = json::parse(r->body)["choices"][0]["message"]["content"];
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(texts[3], alone);
  EXPECT_NE(texts[0], alone);
  // n choices seed with seed + i: choice 0 of seed 7 is the text of seed 7.
  const json n3 = post("/v1/chat/completions", [&] { json b = body(7); b["n"] = 3; return b; }());
  ASSERT_EQ(n3["choices"].size(), 3u);
  EXPECT_EQ(n3["choices"][0]["message"]["content"], alone);
}

TEST_F(Stories, EmbeddingsAreUnitVectorsInBothEncodings) {
  const json f = post("/v1/embeddings", {{"input", json::array({"Lily saw a dog", "The sun was hot"})}});
  ASSERT_EQ(f["data"].size(), 2u);
  const json b = post("/v1/embeddings", {{"input", json::array({"Lily saw a dog", "The sun was hot"})},
                                         {"encoding_format", "base64"}});
  for (int i = 0; i < 2; ++i) {
    const auto v = f["data"][i]["embedding"].get<std::vector<float>>();
    ASSERT_EQ(v.size(), static_cast<size_t>(backend_->model_info().n_embd));
    double norm = 0;
    for (float x : v) norm += static_cast<double>(x) * x;
    EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-4);
    // Decoded by the same rules as the official clients: base64 of little-endian float32.
    const std::string s = b["data"][i]["embedding"];
    std::string bytes;
    uint32_t acc = 0;
    int bits = 0;
    for (char ch : s) {
      if (ch == '=') break;
      const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      acc = acc << 6 | static_cast<uint32_t>(std::strchr(alphabet, ch) - alphabet);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        bytes += static_cast<char>((acc >> bits) & 0xff);
      }
    }
    ASSERT_EQ(bytes.size(), v.size() * 4);
    for (size_t k = 0; k < v.size(); ++k) {
      const auto* p = reinterpret_cast<const uint8_t*>(bytes.data() + 4 * k);
      const uint32_t u = p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
      float x;
      std::memcpy(&x, &u, 4);
      EXPECT_EQ(x, v[k]);
    }
  }
  EXPECT_NE(f["data"][0]["embedding"], f["data"][1]["embedding"]);
  EXPECT_EQ(f["usage"]["prompt_tokens"].get<int>(),
            static_cast<int>(backend_->tokenize_text("Lily saw a dog").size() +
                             backend_->tokenize_text("The sun was hot").size()));
}

TEST_F(Stories, JsonSchemaOutputParses) {
  const json schema = {{"type", "object"},
                       {"properties", {{"answer", {{"type", "string"}, {"enum", {"yes", "no"}}}}}},
                       {"required", {"answer"}},
                       {"additionalProperties", false}};
  const json j = post("/v1/chat/completions",
                      {{"messages", {{{"role", "user"}, {"content", "Is the sky blue?"}}}},
                       {"max_tokens", 60},
                       {"temperature", 0},
                       {"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "a"}, {"schema", schema}}}}}});
  const json& c = j["choices"][0];
  ASSERT_EQ(c["finish_reason"], "stop") << c;
  const json value = json::parse(c["message"]["content"].get<std::string>());
  ASSERT_TRUE(value.is_object()) << value;
  EXPECT_EQ(value.size(), 1u);
  EXPECT_TRUE(value["answer"] == "yes" || value["answer"] == "no") << value;
}

TEST_F(Stories, ContextErrors) {
  json e = post("/v1/completions", {{"prompt", std::string(3000, 'a')}}, 400);
  EXPECT_EQ(e["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(e["error"]["param"], "prompt");
  e = post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 510}}, 400);
  EXPECT_EQ(e["error"]["param"], "max_tokens");
  e = post("/v1/completions", {{"prompt", json::array({1, 600})}}, 400);
  EXPECT_EQ(e["error"]["param"], "prompt[1]");
}

// One streaming completion over a raw socket, so that the client can hang up mid-stream: what
// arrived before the server closed the connection, or before `hang_up_after` bytes when that is
// not 0.
std::string raw_stream(int port, const json& body, size_t hang_up_after) {
  const std::string payload = body.dump();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          "Content-Type: application/json\r\nContent-Length: " +
                          std::to_string(payload.size()) + "\r\n\r\n" + payload;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (hang_up_after > 0 && got.size() > hang_up_after) break;
  }
  ::close(fd);
  return got;
}

bool stream_completed(const std::string& got) {
  return got.rfind("HTTP/1.1 200", 0) == 0 && got.find("data: [DONE]") != std::string::npos &&
         got.find("\"finish_reason\":\"length\"") != std::string::npos;
}

// 32 streaming clients at once; a third hang up after a few chunks. Every other one gets its whole
// stream, nothing fails, and afterwards no sequence runs, no KV block is held, and the process's
// resident memory (process_resident_memory_bytes from /metrics: the server runs in this process)
// is back near where it was before the load. "Before" is measured after a warm-up of 32 short
// streams run to completion, so that what the first load touches once and keeps (model pages,
// the HTTP workers' stacks and malloc arenas, the KV pool, the scheduler's buffers) is already
// counted; what remains is what a leak, or memory the allocator holds on to, would add.
TEST_F(Stories, LoadTest32StreamsWithDisconnects) {
  constexpr int kClients = 32;
  auto rss = [&]() -> int64_t {
    auto r = client_->Get("/metrics");
    if (!r || r->status != 200) return -1;
    const std::string key = "\nprocess_resident_memory_bytes ";
    const size_t at = r->body.find(key);
    return at == std::string::npos ? -1 : std::stoll(r->body.substr(at + key.size()));
  };
  auto wait_idle = [&] {
    // Cancelled sequences leave at the next step: wait for the batch to drain.
    const auto t0 = std::chrono::steady_clock::now();
    SchedulerMetrics m = backend_->metrics();
    while ((m.running > 0 || m.waiting > 0 || m.kv_blocks_used > 0 || server_->in_flight() > 0) &&
           std::chrono::steady_clock::now() - t0 < 5s) {
      std::this_thread::sleep_for(20ms);
      m = backend_->metrics();
    }
    return m;
  };

  {
    std::vector<std::thread> warm;
    std::atomic<int> warm_completed{0};
    for (int i = 0; i < kClients; ++i) {
      warm.emplace_back([&, i] {
        const json body = {
            {"prompt", kPrompt}, {"max_tokens", 8}, {"temperature", 0.8}, {"seed", 1000 + i}, {"stream", true}};
        if (stream_completed(raw_stream(server_->port(), body, 0))) ++warm_completed;
      });
    }
    for (auto& t : warm) t.join();
    ASSERT_EQ(warm_completed.load(), kClients);
    wait_idle();
  }
  const int64_t rss_before = rss();

  std::atomic<int> completed{0}, failed{0}, dropped{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937 rng(static_cast<uint32_t>(i));
      const bool hang_up = i % 3 == 0;
      const json body = {{"prompt", kPrompt}, {"max_tokens", 60 + i}, {"temperature", 0.8}, {"seed", i}, {"stream", true}};
      const std::string got = raw_stream(server_->port(), body, hang_up ? 300 + rng() % 500 : 0);
      if (hang_up && got.rfind("HTTP/1.1 200", 0) == 0 && got.find("data: [DONE]") == std::string::npos) {
        ++dropped;
      } else if (stream_completed(got)) {
        ++completed;
      } else {
        ++failed;
        ADD_FAILURE() << "client " << i << ": " << got.substr(0, 400);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(completed.load() + dropped.load(), kClients);
  EXPECT_GE(completed.load(), kClients * 2 / 3);
  EXPECT_GT(dropped.load(), 0) << "the disconnects happened";
  const SchedulerMetrics m = wait_idle();
  EXPECT_EQ(m.running, 0);
  EXPECT_EQ(m.waiting, 0);
  EXPECT_EQ(m.kv_blocks_used, 0);
  EXPECT_EQ(server_->in_flight(), 0);

  // Measured with stories260K on 2 cores: 17.1 MiB before, 18.6-18.9 MiB after (+1.5-1.7 MiB,
  // all anonymous memory: each HTTP worker's stack some 20 KiB deeper than the warm-up took it,
  // each malloc arena some tens of KiB fuller). malloc_trim(0) after the load gave back under
  // 0.1 MiB, so the server does not call it: glibc is not sitting on freed memory here. Running
  // the load again adds less each time (+0.5, +0.15, +0.1, +0.04 MiB): pages touched once, not a
  // leak. The bound, 8 MiB (or 10 % of a process larger than 80 MiB), is about five times that
  // first growth; a leak of 256 KiB per request (8 MiB over the 32) fails it.
  const int64_t rss_after = rss();
  RecordProperty("rss_before_kib", std::to_string(rss_before / 1024));
  RecordProperty("rss_after_kib", std::to_string(rss_after / 1024));
  if (rss_before > 0 && rss_after > 0 && !kSanitized) {
    const int64_t bound = rss_before + std::max<int64_t>(int64_t{8} << 20, rss_before / 10);
    EXPECT_LE(rss_after, bound) << "resident memory went from " << rss_before / 1024 << " KiB before the load to "
                                << rss_after / 1024 << " KiB after it";
  }
  // And it still serves.
  post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 5}});
}

// squeeze chat reads one message per line when standard input is not a terminal; at temperature 0
// its replies are the server's greedy chat completions of the same conversation.
TEST_F(Stories, ChatCommandMatchesTheServer) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  test::TempDir dir;
  const std::string input = dir.file("in.txt");
  {
    std::ofstream(input) << "Hello\n/bogus\nTell me about Lily\n/reset\nHello\n/quit\nnever read\n";
  }
  const test::RunResult r =
      test::squeeze("chat -m " + test::quote(model) + " --temp 0 -n 12 -c 512 -t 1 < " + test::quote(input));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("unknown command /bogus"), std::string::npos) << r.err;
  auto reply = [&](const json& messages) {
    return post("/v1/chat/completions", {{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}})
        ["choices"][0]["message"]["content"]
            .get<std::string>();
  };
  const std::string first = reply({{{"role", "user"}, {"content", "Hello"}}});
  const std::string second = reply({{{"role", "user"}, {"content", "Hello"}},
                                    {{"role", "assistant"}, {"content", first}},
                                    {{"role", "user"}, {"content", "Tell me about Lily"}}});
  EXPECT_NE(first, second);
  // One reply per line; after /reset the history is gone and the first reply comes again.
  EXPECT_EQ(r.out, first + "\n" + second + "\n" + first + "\n");
}

}  // namespace
}  // namespace sq::serve
