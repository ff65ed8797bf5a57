// The overhead of one parallel region: parallel_for over as many parts as threads with an empty
// body, which is the fixed cost every matmul of a generated token pays.
//
// CondvarPool is the pool squeeze had before the spinning one (a mutex, two condition variables,
// a std::function per region); it stays here so that both designs are measured in the same run on
// the same (shared, noisy) machine, which is the only comparison these machines allow.
//
//   build/bench/squeeze_bench --benchmark_filter=ParallelFor --benchmark_repetitions=5
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "base/thread_pool.h"

namespace {

class CondvarPool {
 public:
  explicit CondvarPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
  }
  ~CondvarPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    if (n_threads_ == 1 || n <= grain) {
      fn(0, n);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      job_n_ = n;
      job_grain_ = grain;
      pending_ = n_threads_ - 1;
      ++generation_;
    }
    start_cv_.notify_all();
    auto [b, e] = chunk(n, grain, n_threads_, 0);
    if (b < e) fn(b, e);
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  static std::pair<int64_t, int64_t> chunk(int64_t n, int64_t grain, int parts, int index) {
    int64_t blocks = (n + grain - 1) / grain;
    int64_t per = blocks / parts;
    int64_t extra = blocks % parts;
    int64_t b0 = index * per + std::min<int64_t>(index, extra);
    int64_t b1 = b0 + per + (index < extra ? 1 : 0);
    return {std::min(n, b0 * grain), std::min(n, b1 * grain)};
  }

  void worker(int index) {
    uint64_t seen = 0;
    while (true) {
      const std::function<void(int64_t, int64_t)>* job;
      int64_t n, grain;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
        n = job_n_;
        grain = job_grain_;
      }
      auto [b, e] = chunk(n, grain, n_threads_, index);
      if (b < e) (*job)(b, e);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_grain_ = 1;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

// Empty regions back to back: the hand-out and join cost alone. The body captures by reference
// (as the matmul's does) so that the std::function of the old pool allocates as it did there.
template <typename Pool>
void BM_ParallelForEmpty(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  Pool pool(threads);
  std::atomic<int64_t> sink{0};
  int64_t a = 0, b = 0, c = 0;
  for (auto _ : state) {
    pool.parallel_for(threads, [&](int64_t begin, int64_t end) {
      benchmark::DoNotOptimize(a + b + c + begin + end);
      if (begin < 0) sink.fetch_add(1, std::memory_order_relaxed);
    });
  }
  state.SetItemsProcessed(state.iterations());
}

// Regions separated by a short serial gap on the caller (a norm or the hand-out of the next
// matmul), the pattern of a generated token.
template <typename Pool>
void BM_ParallelForWithGap(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  Pool pool(threads);
  std::vector<float> v(4096, 1.0f);
  for (auto _ : state) {
    float s = 0;
    for (float x : v) s += x;  // ~1-2 µs of serial work
    benchmark::DoNotOptimize(s);
    pool.parallel_for(static_cast<int64_t>(v.size()), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) v[static_cast<size_t>(i)] *= 1.0f;
      benchmark::ClobberMemory();
    });
  }
}

// Empty balanced regions (parallel_for_balanced, as every matmul and attention of a token opens):
// the hand-out, each thread's part, the steal attempts at the end and the join.
void BM_BalancedEmpty(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  sq::ThreadPool pool(threads);
  std::atomic<int64_t> sink{0};
  for (auto _ : state) {
    pool.parallel_for_balanced(64 * threads, [&](int64_t begin, int64_t end) {
      if (begin < 0 || end < 0) sink.fetch_add(1, std::memory_order_relaxed);
    }, 16, 16);
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_ParallelForEmpty<sq::ThreadPool>)->Name("ParallelForEmpty/spin")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_ParallelForEmpty<CondvarPool>)->Name("ParallelForEmpty/condvar")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_ParallelForWithGap<sq::ThreadPool>)->Name("ParallelForWithGap/spin")->Arg(2)->UseRealTime();
BENCHMARK(BM_ParallelForWithGap<CondvarPool>)->Name("ParallelForWithGap/condvar")->Arg(2)->UseRealTime();
BENCHMARK(BM_BalancedEmpty)->Name("BalancedEmpty/spin")->Arg(1)->Arg(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
