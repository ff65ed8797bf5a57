// A persistent pool of worker threads for data-parallel loops (no thread is created per token).
// parallel_for splits [0, n) into contiguous chunks, one per thread; parallel_for_balanced starts
// from the same split and lets a thread that runs out take pieces of the others' chunks. Callers
// split work over outputs only, so results depend neither on the thread count nor on who ran which
// piece (DESIGN.md, invariant 2).
//
// Token generation opens ~150 parallel regions per token, each tens of microseconds long, so the
// cost of starting and joining a region matters as much as the work in it. Between regions the
// workers spin on an atomic generation counter for a short budget (kSpinBudget in the .cpp) and
// only then sleep on a futex; the calling thread waits for the workers the same way. A pool with
// more threads than the machine has CPUs does not spin at all. A region that starts while the
// workers still spin costs one cache-line transfer each way: the job travels with the generation,
// and each worker reports on a line of its own (an empty region of two threads: 0.63-0.78 µs on
// this project's 2-vCPU machines, 1.17-1.37 µs with every field on a line of its own; bench/
// threadpool_bench.cpp). One that starts after they fell asleep costs a futex wake (a few
// microseconds).
//
// A worker that loses its CPU to other work while it holds a piece of a region stalls the whole
// region until it runs again, often for milliseconds: with one of two CPUs taken by a busy loop,
// two threads generated Qwen2.5-0.5B at 0.54x the speed of one. So a pool also judges its balanced
// regions: over windows of at least 10 ms it compares their time with what the calling thread
// would have taken alone, at the rate it ran its own pieces. When in two windows in a row the
// workers saved less than a fifth of that (kWorthIt in the .cpp; healthy workers save about
// half), the following balanced regions run on the calling thread alone for a while (50 ms,
// doubling while it lasts, up to 800 ms), and then the pool tries its workers again.
// Which thread computes a piece never changes its results (callers split over outputs only).
// SQUEEZE_POOL_FALLBACK=0 in the environment turns this off (the tests do, so that their regions
// always use every thread); static parallel_for regions never fall back.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace sq {

class ThreadPool {
 public:
  // n_threads counts the calling thread: 1 means no workers. may_run_alone: whether balanced regions
  // fall back to the calling thread while the workers are slower than it alone (the header's
  // comment); the one-argument form reads SQUEEZE_POOL_FALLBACK (on unless it is "0").
  explicit ThreadPool(int n_threads);
  ThreadPool(int n_threads, bool may_run_alone);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Counts since construction; readable from any thread while regions run.
  struct Stats {
    int64_t balanced_regions = 0;  // parallel_for_balanced calls that had work for more than one thread
    int64_t alone_regions = 0;     // of those, run on the calling thread alone (the fallback)
    int64_t fallbacks = 0;         // times the pool fell back to the calling thread
  };
  Stats stats() const;

  // Runs fn(begin, end) over a partition of [0, n) and returns when every part is done. Chunks
  // start at multiples of `grain` so that callers can keep blocks whole. The partition depends only
  // on n, grain and size(): part i of size() parts goes to thread i (0 is the calling thread).
  //
  // An exception thrown by fn in any part is caught; when every part has finished, the first one
  // caught is rethrown here, on the calling thread (the other parts still run to their end).
  //
  // A parallel_for issued while this pool is already running one (from inside fn, on any thread,
  // or from a second thread that shares the pool) runs fn(0, n) inline on the thread that issued
  // it: a nested region cannot wait for workers that are busy with the outer one. Results do not
  // change, since callers never let them depend on the partition.
  template <typename F>
  void parallel_for(int64_t n, F&& fn, int64_t grain = 1) {
    using Fn = std::remove_reference_t<F>;
    Job job;
    job.object = const_cast<void*>(static_cast<const void*>(std::addressof(fn)));
    job.call = [](void* object, int64_t begin, int64_t end) {
      (*static_cast<Fn*>(object))(begin, end);
    };
    run(n, grain, job);
  }

  // As parallel_for, for loops whose parts may take unequal time although they hold equal work (a
  // memory-bound product on CPUs that other work slows unevenly): each thread starts on the part
  // parallel_for would give it, front to back, in pieces that halve as it goes, and a thread that
  // runs out takes pieces of min_piece (rounded up to grain) from the back of another thread's
  // part. fn may be called several times per thread; the calls still cover a partition of [0, n)
  // in multiples of grain, but which thread runs which piece depends on timing, so fn's results
  // must not depend on it (callers split over outputs only). While the pool falls back (the
  // header's comment), fn(0, n) runs on the calling thread.
  template <typename F>
  void parallel_for_balanced(int64_t n, F&& fn, int64_t grain, int64_t min_piece) {
    using Fn = std::remove_reference_t<F>;
    Job job;
    job.object = const_cast<void*>(static_cast<const void*>(std::addressof(fn)));
    job.call = [](void* object, int64_t begin, int64_t end) {
      (*static_cast<Fn*>(object))(begin, end);
    };
    job.min_piece = std::max<int64_t>(1, min_piece);
    run(n, grain, job);
  }

 private:
  // A type-erased reference to the caller's callable: no allocation per region.
  struct Job {
    void* object = nullptr;
    void (*call)(void*, int64_t, int64_t) = nullptr;
    int64_t min_piece = 0;  // > 0: parallel_for_balanced's pieces, at least this many elements
  };

  // A thread's part of a balanced region, in grain blocks: [front, back) packed as front << 32 |
  // back, taken from the front by its thread and from the back by the others, one CAS per piece.
  struct alignas(64) Part {
    std::atomic<uint64_t> range{0};
  };

  using Clock = std::chrono::steady_clock;

  void run(int64_t n, int64_t grain, const Job& job);
  void worker(int index);
  void run_part(int index);
  void run_balanced(int index);
  void call_blocks(int64_t b0, int64_t b1);
  void record_error(std::exception_ptr e);
  // Adds a parallel balanced region to the current window and, when the window is full, decides
  // whether the next regions run alone. caller_done: when the calling thread ran out of pieces.
  void judge(Clock::time_point start, Clock::time_point caller_done, Clock::time_point end, int64_t blocks);

  // A worker's flag: the generation of the last region it finished, on a cache line of its own
  // that only that worker writes, so that the caller's wait reads it in one transfer.
  struct alignas(64) Done {
    std::atomic<uint32_t> generation{0};
  };

  int n_threads_;
  std::chrono::microseconds spin_budget_;  // kSpinBudget, or 0 when oversubscribed
  std::vector<std::thread> workers_;

  // The region's description shares a cache line with its generation: a worker that sees the new
  // generation has the job in the same transfer. (Between cores of a virtual machine a transfer
  // costs ~300 ns, about what the empty region costs with every field on a line of its own.) The
  // caller writes the fields before it bumps the generation (release); workers read them after
  // they see the new generation (acquire).
  struct alignas(64) Control {
    std::atomic<uint32_t> generation{0};
    bool stop = false;
    Job job;
    int64_t n = 0;
    int64_t grain = 1;
    int64_t piece = 0;  // blocks a thief takes at once (balanced regions only)
  };
  Control control_;
  std::unique_ptr<Part[]> parts_;
  std::unique_ptr<Done[]> done_;  // one per worker (index - 1)

  alignas(64) std::atomic<int32_t> sleepers_{0};       // workers asleep (or going to sleep) on the generation
  alignas(64) std::atomic<int32_t> caller_asleep_{0};  // 1 while the caller sleeps on a worker's flag
  alignas(64) std::atomic<bool> busy_{false};          // a region is running

  // The fallback's state, touched only by the thread that holds busy_.
  bool may_run_alone_;
  int64_t caller_blocks_ = 0;         // grain blocks the calling thread ran in this region
  Clock::duration window_wall_{};     // the window's regions, start to end
  double window_alone_ns_ = 0;        // the same regions at the calling thread's own rate
  int64_t window_regions_ = 0;
  int slow_windows_ = 0;              // slow windows in a row
  Clock::time_point alone_until_{};   // balanced regions before this run on the caller alone
  Clock::duration alone_for_;         // the next fallback's length
  std::atomic<int64_t> balanced_regions_{0}, alone_regions_{0}, fallbacks_{0};

  std::mutex error_mutex_;
  std::exception_ptr error_;  // the first exception of the current region
};

// Physical cores when they can be told apart, else logical CPUs; at least 1.
int default_thread_count();

}  // namespace sq
