#include "base/thread_pool.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sq {

namespace {

// How long a waiting thread (a worker between regions, or the caller waiting for the workers)
// polls before it sleeps. Inside a generated token the gaps between regions (a norm, a RoPE, the
// hand-out of the next matmul) last a few microseconds, so a spinning worker catches every region
// of a token without a futex wake (each wake costs ~5-10 µs of latency, comparable to a whole
// small matmul). Between tokens (sampling, the caller's own bookkeeping) the gap can be longer;
// 200 µs still covers sampling over a 32k vocabulary, while an idle pool stops burning its cores
// within a fraction of a millisecond. Spinning threads share a core with nobody as long as the pool
// has no more threads than cores, which is what -t defaults to.
constexpr auto kSpinBudget = std::chrono::microseconds(200);
// After this long, a spinning thread also yields its CPU between rounds of polls. On a machine
// shared with other work (a build, another engine) the thread we wait for may be waiting for a
// CPU; pure spinning would hold that CPU for the rest of our time slice, while a yield costs under
// a microsecond when nobody else wants it.
constexpr auto kPureSpin = std::chrono::microseconds(10);
// A gap between two rounds of polls (or across a yield) longer than this means the thread was
// descheduled.
constexpr auto kPreempted = std::chrono::microseconds(50);
// Polls between two reads of the clock (a clock read costs ~20 ns, a pause ~10-40 ns).
constexpr int kPollsPerClockRead = 64;

// The fallback to the calling thread (thread_pool.h). A window holds at least this much time and
// this many balanced regions (a generated token of a small model opens ~100 in a few
// milliseconds), so that one region that waited for a descheduled worker does not decide alone.
constexpr auto kJudgeWindow = std::chrono::milliseconds(10);
constexpr int64_t kJudgeRegions = 16;
// A window is slow when the workers saved less than a fifth of the caller's time alone: two
// healthy threads generating a token save about half of it (a window's estimate 1.5-2.5x its
// time), while with one of two CPUs held by a busy loop the estimate read 0.8-1.1x although the
// caller alone then ran 1.75x as fast as both (in parallel, the caller itself loses time to the
// CPU it shares). Two slow windows in a row make a fallback, so that one long stall of a worker
// (tens of milliseconds on a quiet machine, now and then) does not.
constexpr double kWorthIt = 1.25;
constexpr int kSlowWindows = 2;
// How long regions then run alone: the first time, and at most, doubling each time the pool tries
// its workers again and finds them still slower. The first try after a fallback costs one window
// at the slow rate, so a long fallback wastes little while other work holds a CPU and stays short
// of a second after it stopped.
constexpr auto kAloneFirst = std::chrono::milliseconds(50);
constexpr auto kAloneLongest = std::chrono::milliseconds(800);

bool fallback_from_env() {
  const char* v = std::getenv("SQUEEZE_POOL_FALLBACK");
  return v == nullptr || std::string_view(v) != "0";
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Sleeps while *addr == expected (or returns at once if it differs). Spurious returns are allowed;
// callers loop.
void futex_wait(std::atomic<int32_t>& a, int32_t expected) {
#if defined(__linux__)
  static_assert(sizeof(std::atomic<int32_t>) == sizeof(int32_t));
  ::syscall(SYS_futex, reinterpret_cast<int32_t*>(&a), FUTEX_WAIT_PRIVATE, expected, nullptr,
            nullptr, 0);
#else
  a.wait(expected);
#endif
}

void futex_wake_all(std::atomic<int32_t>& a) {
#if defined(__linux__)
  ::syscall(SYS_futex, reinterpret_cast<int32_t*>(&a), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
#else
  a.notify_all();
#endif
}

// The generations are uint32_t; the futex word is their 32 bits.
std::atomic<int32_t>& as_futex(std::atomic<uint32_t>& a) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(std::atomic<int32_t>));
  return reinterpret_cast<std::atomic<int32_t>&>(a);
}

// Polls `done` for up to `budget`; true when it became true.
template <typename Done>
bool spin_until(Done done, std::chrono::microseconds budget) {
  using Clock = std::chrono::steady_clock;
  if (budget.count() == 0) return done();
  const auto start = Clock::now();
  const auto deadline = start + budget;
  const auto yield_from = start + kPureSpin;
  auto last = start;
  while (true) {
    for (int i = 0; i < kPollsPerClockRead; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    const auto now = Clock::now();
    // A round of polls takes a few microseconds; a much longer one means this thread lost its CPU
    // to another, so the machine has more runnable threads than CPUs: sleep, since a woken
    // sleeper is scheduled sooner than a spinner that used up its time slice.
    if (now >= deadline || now - last > kPreempted) return done();
    last = now;
    if (now >= yield_from) {
      std::this_thread::yield();
      if (Clock::now() - now > kPreempted) return done();
    }
  }
}

std::pair<int64_t, int64_t> chunk(int64_t n, int64_t grain, int parts, int index) {
  int64_t blocks = (n + grain - 1) / grain;
  int64_t per = blocks / parts;
  int64_t extra = blocks % parts;
  int64_t b0 = index * per + std::min<int64_t>(index, extra);
  int64_t b1 = b0 + per + (index < extra ? 1 : 0);
  return {std::min(n, b0 * grain), std::min(n, b1 * grain)};
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : ThreadPool(n_threads, fallback_from_env()) {}

ThreadPool::ThreadPool(int n_threads, bool may_run_alone)
    : n_threads_(std::max(1, n_threads)), may_run_alone_(may_run_alone), alone_for_(kAloneFirst) {
  // With more threads than CPUs a spinning thread takes the CPU from one that has work: sleep at
  // once instead.
  const auto cpus = static_cast<int>(std::thread::hardware_concurrency());
  spin_budget_ = cpus > 0 && n_threads_ > cpus ? std::chrono::microseconds(0) : kSpinBudget;
  static_assert(sizeof(Control) == 64, "a region's description fits one cache line");
  parts_ = std::make_unique<Part[]>(static_cast<size_t>(n_threads_));
  done_ = std::make_unique<Done[]>(static_cast<size_t>(n_threads_ - 1));
  workers_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) {
    workers_.emplace_back([this, i] { worker(i); });
  }
}

ThreadPool::~ThreadPool() {
  control_.stop = true;
  control_.generation.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(as_futex(control_.generation));
  for (auto& t : workers_) t.join();
}

void ThreadPool::record_error(std::exception_ptr e) {
  std::lock_guard<std::mutex> lock(error_mutex_);
  if (!error_) error_ = std::move(e);
}

void ThreadPool::run_part(int index) {
  if (control_.job.min_piece > 0) {
    run_balanced(index);
    return;
  }
  auto [b, e] = chunk(control_.n, control_.grain, n_threads_, index);
  if (b >= e) return;
  try {
    control_.job.call(control_.job.object, b, e);
  } catch (...) {
    record_error(std::current_exception());
  }
}

void ThreadPool::call_blocks(int64_t b0, int64_t b1) {
  try {
    const Control& c = control_;
    c.job.call(c.job.object, b0 * c.grain, std::min(c.n, b1 * c.grain));
  } catch (...) {
    record_error(std::current_exception());
  }
}

void ThreadPool::run_balanced(int index) {
  // Takes pieces from one part until it is empty: from the front, half of what is left at a time
  // (at least a thief's piece), so that the owner streams its rows in order with few calls while
  // the tail stays fine-grained; from the back, a thief's piece at a time.
  auto drain = [this, index](std::atomic<uint64_t>& part, bool front) {
    uint64_t v = part.load(std::memory_order_acquire);
    while (true) {
      const auto f = static_cast<int64_t>(v >> 32), b = static_cast<int64_t>(v & 0xffffffffu);
      if (f >= b) return;
      const int64_t piece = control_.piece;
      const int64_t take = std::min(b - f, front ? std::max(piece, (b - f + 1) / 2) : piece);
      const int64_t f2 = front ? f + take : f, b2 = front ? b : b - take;
      if (part.compare_exchange_weak(v, static_cast<uint64_t>(f2) << 32 | static_cast<uint64_t>(b2),
                                     std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (index == 0) caller_blocks_ += take;
        if (front) {
          call_blocks(f, f2);
        } else {
          call_blocks(b2, b);
        }
        v = part.load(std::memory_order_acquire);
      }
    }
  };
  drain(parts_[static_cast<size_t>(index)].range, true);
  // Then the others' parts from the back, the next thread's first.
  for (int k = 1; k < n_threads_; ++k) {
    drain(parts_[static_cast<size_t>((index + k) % n_threads_)].range, false);
  }
}

void ThreadPool::worker(int index) {
  std::atomic<uint32_t>& generation = control_.generation;
  std::atomic<uint32_t>& done = done_[static_cast<size_t>(index - 1)].generation;
  uint32_t seen = 0;  // the generation the pool starts with: a region published before this thread ran is new
  while (true) {
    // Wait for a new generation: spin first, then sleep. The sleeper count and the generation are
    // both seq_cst, so either the caller sees sleepers_ > 0 and wakes us, or we see the new
    // generation before sleeping; FUTEX_WAIT rechecks the word, so no wake-up is lost.
    auto changed = [&] { return generation.load(std::memory_order_acquire) != seen; };
    if (!spin_until(changed, spin_budget_)) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      while (generation.load(std::memory_order_seq_cst) == seen) {
        futex_wait(as_futex(generation), static_cast<int32_t>(seen));
      }
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    seen = generation.load(std::memory_order_acquire);
    if (control_.stop) return;
    run_part(index);
    // Done: the flag the caller polls (release, so that the part's writes come with it). If the
    // caller went to sleep on it, wake it (the same seq_cst pairing as above, with caller_asleep_).
    done.store(seen, std::memory_order_seq_cst);
    if (caller_asleep_.load(std::memory_order_seq_cst) != 0) futex_wake_all(as_futex(done));
  }
}

void ThreadPool::run(int64_t n, int64_t grain, const Job& job) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (n_threads_ == 1 || n <= grain || busy_.exchange(true, std::memory_order_acquire)) {
    // One part, a single-threaded pool, or a nested region: inline on this thread.
    job.call(job.object, 0, n);
    return;
  }
  // Releases busy_ however this region ends (fn may throw on the alone path).
  struct Release {
    std::atomic<bool>& busy;
    ~Release() { busy.store(false, std::memory_order_release); }
  } release{busy_};
  const bool balanced = job.min_piece > 0;
  Clock::time_point start{};
  if (balanced) {
    balanced_regions_.fetch_add(1, std::memory_order_relaxed);
    if (may_run_alone_) {
      start = Clock::now();
      if (start < alone_until_) {
        alone_regions_.fetch_add(1, std::memory_order_relaxed);
        job.call(job.object, 0, n);
        return;
      }
    }
  }
  Control& c = control_;
  c.job = job;
  c.n = n;
  c.grain = grain;
  const int64_t blocks = (n + grain - 1) / grain;
  if (c.job.min_piece > 0 && blocks > 0xffffffffLL) c.job.min_piece = 0;  // too many to pack: static
  if (c.job.min_piece > 0) {
    c.piece = std::max<int64_t>(1, (c.job.min_piece + grain - 1) / grain);
    for (int i = 0; i < n_threads_; ++i) {
      auto [b, e] = chunk(blocks, 1, n_threads_, i);
      parts_[static_cast<size_t>(i)].range.store(static_cast<uint64_t>(b) << 32 | static_cast<uint64_t>(e),
                                                 std::memory_order_relaxed);
    }
  }
  error_ = nullptr;
  caller_blocks_ = 0;
  const uint32_t gen = c.generation.fetch_add(1, std::memory_order_seq_cst) + 1;  // publishes the job
  if (sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(as_futex(c.generation));

  run_part(0);
  const bool judged = balanced && may_run_alone_ && c.job.min_piece > 0;
  const Clock::time_point caller_done = judged ? Clock::now() : Clock::time_point{};

  for (int w = 0; w < n_threads_ - 1; ++w) {
    std::atomic<uint32_t>& done = done_[static_cast<size_t>(w)].generation;
    auto finished = [&] { return done.load(std::memory_order_acquire) == gen; };
    if (spin_until(finished, spin_budget_)) continue;
    caller_asleep_.store(1, std::memory_order_seq_cst);
    uint32_t d;
    while ((d = done.load(std::memory_order_seq_cst)) != gen) {
      futex_wait(as_futex(done), static_cast<int32_t>(d));
    }
    caller_asleep_.store(0, std::memory_order_relaxed);
  }
  if (judged) judge(start, caller_done, Clock::now(), blocks);
  std::exception_ptr error = std::move(error_);
  error_ = nullptr;
  if (error) std::rethrow_exception(error);
}

void ThreadPool::judge(Clock::time_point start, Clock::time_point caller_done, Clock::time_point end,
                       int64_t blocks) {
  // A region the workers took whole says nothing about the caller's rate: it was fast anyway.
  if (caller_blocks_ <= 0) return;
  auto ns = [](Clock::duration d) {
    return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  };
  window_wall_ += end - start;
  window_alone_ns_ += ns(caller_done - start) * static_cast<double>(blocks) / static_cast<double>(caller_blocks_);
  if (++window_regions_ < kJudgeRegions || window_wall_ < kJudgeWindow) return;
  const double wall_ns = ns(window_wall_);
  const bool slow = window_alone_ns_ < kWorthIt * wall_ns;
  slow_windows_ = slow ? slow_windows_ + 1 : 0;
  if (slow_windows_ >= kSlowWindows) {
    // The workers saved too little: one was waited for (descheduled, or on a CPU that other work
    // shares), or the regions are too small to share.
    slow_windows_ = 0;
    alone_until_ = end + alone_for_;
    alone_for_ = std::min<Clock::duration>(2 * alone_for_, kAloneLongest);
    fallbacks_.fetch_add(1, std::memory_order_relaxed);
  } else if (!slow) {
    alone_for_ = kAloneFirst;
  }
  window_wall_ = {};
  window_alone_ns_ = 0;
  window_regions_ = 0;
}

ThreadPool::Stats ThreadPool::stats() const {
  Stats s;
  s.balanced_regions = balanced_regions_.load(std::memory_order_relaxed);
  s.alone_regions = alone_regions_.load(std::memory_order_relaxed);
  s.fallbacks = fallbacks_.load(std::memory_order_relaxed);
  return s;
}

int default_thread_count() {
  // Count distinct (physical id, core id) pairs; hyper-threads share a core's arithmetic units.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> cores;
  std::string line, phys = "0";
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "physical id") phys = value;
    if (key == "core id") cores.emplace(phys, value);
  }
  int n = static_cast<int>(cores.size());
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, n);
}

}  // namespace sq
