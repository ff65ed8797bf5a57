#include "base/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace sq {
namespace {

std::string where_of(int threads, int64_t n, int64_t grain, int64_t piece) {
  return "threads=" + std::to_string(threads) + " n=" + std::to_string(n) +
         " grain=" + std::to_string(grain) + " piece=" + std::to_string(piece);
}

// Runs region(n, fn, grain) (a parallel_for variant) and checks that fn's calls cover [0, n)
// exactly once, each in whole grains (a call ends at a multiple of the grain or at n).
template <class Region>
void expect_every_index_once(Region region, int64_t n, int64_t grain, const std::string& where) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  region(
      n,
      [&](int64_t b, int64_t e) {
        ASSERT_LE(0, b);
        ASSERT_LT(b, e);
        ASSERT_LE(e, n);
        // Chunks start on a multiple of the grain so callers can keep blocks whole.
        EXPECT_EQ(b % grain, 0) << where;
        EXPECT_TRUE(e == n || e % grain == 0) << where << " e=" << e;
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
      },
      grain);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << where << " i=" << i;
}

TEST(ThreadPool, EveryIndexCoveredExactlyOnce) {
  for (int threads : {1, 2, 3, 4, 7}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 5, 16, 17, 31, 64, 100, 1000, 4097}) {
      for (int64_t grain : {1, 2, 3, 16, 32, 1000}) {
        expect_every_index_once([&](int64_t m, auto&& fn, int64_t g) { pool.parallel_for(m, fn, g); },
                                n, grain, where_of(threads, n, grain, 0));
      }
    }
  }
}

TEST(ThreadPool, PartitionDependsOnlyOnSizeGrainAndThreads) {
  // Two pools of the same size hand out the same chunks, whatever ran on them before.
  auto chunks = [](ThreadPool& pool, int64_t n, int64_t grain) {
    std::vector<std::pair<int64_t, int64_t>> parts(static_cast<size_t>(pool.size()), {-1, -1});
    std::atomic<int> count{0};
    pool.parallel_for(
        n,
        [&](int64_t b, int64_t e) {
          parts[static_cast<size_t>(count.fetch_add(1))] = {b, e};
        },
        grain);
    std::sort(parts.begin(), parts.end());
    return parts;
  };
  ThreadPool a(3), b(3);
  for (int i = 0; i < 10; ++i) chunks(a, 50 + i, 1);
  EXPECT_EQ(chunks(a, 1000, 16), chunks(b, 1000, 16));
}

TEST(ThreadPool, ExceptionInWorkerIsRethrownOnCaller) {
  ThreadPool pool(4);
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> parts_run{0};
    EXPECT_THROW(pool.parallel_for(4,
                                   [&](int64_t b, int64_t) {
                                     parts_run.fetch_add(1);
                                     if (b == 3) throw std::runtime_error("part 3 failed");
                                   }),
                 std::runtime_error);
    EXPECT_EQ(parts_run.load(), 4) << "every part still runs";
  }
  // The pool stays usable after an exception.
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
  });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(ThreadPool, ExceptionOnCallingThreadWaitsForWorkers) {
  ThreadPool pool(2);
  std::atomic<bool> worker_done{false};
  try {
    pool.parallel_for(2, [&](int64_t b, int64_t) {
      if (b == 0) throw std::logic_error("caller's part");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      worker_done.store(true);
    });
    FAIL() << "expected an exception";
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "caller's part");
  }
  EXPECT_TRUE(worker_done.load()) << "parallel_for returned before the worker finished";
}

TEST(ThreadPool, ReturnsOnlyWhenEveryWorkerIsDone) {
  // Workers that outlast the caller's spin budget put it to sleep; it waits for them one by one, so
  // the slowest worker is first, last or in between in turn. A region that returns early, or a
  // wake-up that is lost, shows here as a missing part or a hang.
  ThreadPool pool(4);
  for (int slowest = 1; slowest < 4; ++slowest) {
    std::vector<std::atomic<int>> done(4);
    pool.parallel_for(4, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        if (i != 0) std::this_thread::sleep_for(std::chrono::milliseconds(i == slowest ? 4 : 1));
        done[static_cast<size_t>(i)].store(1);
      }
    });
    for (int i = 0; i < 4; ++i) EXPECT_EQ(done[static_cast<size_t>(i)].load(), 1) << "slowest " << slowest << " part " << i;
  }
}

TEST(ThreadPool, OnlyOneOfSeveralExceptionsIsRethrown) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(3, [](int64_t, int64_t) { throw std::runtime_error("every part"); }),
               std::runtime_error);
}

TEST(ThreadPool, NestedRegionRunsInline) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(30 * 7);
  pool.parallel_for(30, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto me = std::this_thread::get_id();
      pool.parallel_for(7, [&](int64_t b2, int64_t e2) {
        EXPECT_EQ(std::this_thread::get_id(), me) << "a nested region runs on its own thread";
        EXPECT_EQ(b2, 0);
        EXPECT_EQ(e2, 7);
        for (int64_t j = b2; j < e2; ++j) hits[static_cast<size_t>(i * 7 + j)].fetch_add(1);
      });
    }
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
}

TEST(ThreadPool, ThousandsOfTinyRegionsFinish) {
  // Regions shorter than a futex wake, back to back: a lost wake-up would hang here.
  ThreadPool pool(2);
  int64_t total = 0;
  std::vector<int64_t> parts(2);
  for (int i = 0; i < 20000; ++i) {
    pool.parallel_for(2, [&](int64_t b, int64_t e) { parts[static_cast<size_t>(b)] = e - b; });
    total += parts[0] + parts[1];
  }
  EXPECT_EQ(total, 40000);
}

TEST(ThreadPool, RegionsAfterIdleSleepStillRun) {
  // Gaps longer than the spin budget make the workers sleep; each region must still wake them.
  ThreadPool pool(3);
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    std::atomic<int> parts{0};
    pool.parallel_for(3, [&](int64_t, int64_t) { parts.fetch_add(1); });
    EXPECT_EQ(parts.load(), 3);
  }
  // Alternate short and long gaps, with more threads than this machine may have cores.
  ThreadPool wide(8);
  std::atomic<int64_t> count{0};
  for (int i = 0; i < 200; ++i) {
    if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    wide.parallel_for(64, [&](int64_t b, int64_t e) { count.fetch_add(e - b); });
  }
  EXPECT_EQ(count.load(), 200 * 64);
}

TEST(ThreadPool, BalancedRegionCoversEveryIndexOnceInWholeGrains) {
  for (int threads : {1, 2, 3, 4, 7}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 5, 16, 17, 100, 1000, 4097}) {
      for (int64_t grain : {1, 3, 16}) {
        for (int64_t piece : {1, 5, 64, 100000}) {
          expect_every_index_once(
              [&](int64_t m, auto&& fn, int64_t g) { pool.parallel_for_balanced(m, fn, g, piece); }, n, grain,
              where_of(threads, n, grain, piece));
        }
      }
    }
  }
}

TEST(ThreadPool, BalancedRegionMovesWorkAwayFromASlowThread) {
  // The calling thread's part is slow (it sleeps on every index it gets); the worker finishes its
  // own half and then takes pieces from the back of the caller's. With a fixed split the caller
  // would run all of its 64 indices.
  ThreadPool pool(2);
  const auto caller = std::this_thread::get_id();
  std::atomic<int64_t> on_caller{0}, on_worker{0};
  pool.parallel_for_balanced(
      128,
      [&](int64_t b, int64_t e) {
        const bool here = std::this_thread::get_id() == caller;
        (here ? on_caller : on_worker).fetch_add(e - b);
        if (here) std::this_thread::sleep_for(std::chrono::milliseconds(e - b));
      },
      1, 4);
  EXPECT_EQ(on_caller.load() + on_worker.load(), 128);
  EXPECT_LT(on_caller.load(), 48) << "the worker took no work from the slow thread";
}

TEST(ThreadPool, BalancedRegionRethrowsAndStaysUsable) {
  ThreadPool pool(3);
  std::atomic<int64_t> covered{0};
  EXPECT_THROW(pool.parallel_for_balanced(
                   300,
                   [&](int64_t b, int64_t e) {
                     covered.fetch_add(e - b);
                     if (b <= 150 && 150 < e) throw std::runtime_error("index 150");
                   },
                   1, 10),
               std::runtime_error);
  EXPECT_EQ(covered.load(), 300) << "the other pieces still run";
  std::atomic<int64_t> sum{0};
  pool.parallel_for_balanced(
      100,
      [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
      },
      1, 7);
  EXPECT_EQ(sum.load(), 4950);
}

// Busy-waits for `us` microseconds: work that holds the CPU, as a product does.
void busy_for(std::chrono::microseconds us) {
  const auto until = std::chrono::steady_clock::now() + us;
  while (std::chrono::steady_clock::now() < until) {
  }
}

// One balanced region of 64 indices; returns whether the calling thread ran it whole in one call
// (the fallback) and counts the indices run elsewhere into *on_workers.
template <class Body>
bool region_ran_alone(ThreadPool& pool, Body body, int64_t* on_workers = nullptr) {
  const auto caller = std::this_thread::get_id();
  std::atomic<int64_t> elsewhere{0};
  std::atomic<bool> whole{false};
  std::atomic<int64_t> covered{0};
  pool.parallel_for_balanced(
      64,
      [&](int64_t b, int64_t e) {
        const bool here = std::this_thread::get_id() == caller;
        if (here && b == 0 && e == 64) whole = true;
        if (!here) elsewhere.fetch_add(e - b);
        covered.fetch_add(e - b);
        body(here, e - b);
      },
      1, 1);
  EXPECT_EQ(covered.load(), 64);
  if (on_workers != nullptr) *on_workers += elsewhere.load();
  return whole.load();
}

TEST(ThreadPool, BalancedRegionsFallBackToTheCallerWhileAWorkerStallsAndReturnAfter) {
  ThreadPool pool(2, /*may_run_alone=*/true);
  // A worker that loses its CPU: each of its pieces takes a millisecond, while the caller's take
  // 5 us per index. Two windows of 10 ms later the regions run on the caller alone.
  auto stalled = [](bool here, int64_t count) {
    if (here) {
      busy_for(std::chrono::microseconds(5 * count));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  int alone_at = -1;
  for (int i = 0; i < 2000 && alone_at < 0; ++i) {
    if (region_ran_alone(pool, stalled)) alone_at = i;
  }
  ASSERT_GE(alone_at, 0) << "2000 regions waited for a stalled worker and the pool never ran one alone";
  EXPECT_GE(pool.stats().fallbacks, 1);
  EXPECT_GE(pool.stats().alone_regions, 1);
  EXPECT_GE(pool.stats().balanced_regions, alone_at + 1);

  // Meanwhile an exception on the alone path reaches the caller and leaves the pool usable.
  EXPECT_THROW(pool.parallel_for_balanced(
                   10, [](int64_t, int64_t) { throw std::runtime_error("alone"); }, 1, 1),
               std::runtime_error);
  // Static regions keep their partition: part 1 still runs on the worker.
  std::atomic<bool> part1_elsewhere{false};
  const auto caller = std::this_thread::get_id();
  pool.parallel_for(2, [&](int64_t b, int64_t e) {
    if (b <= 1 && 1 < e) part1_elsewhere = std::this_thread::get_id() != caller;
  });
  EXPECT_TRUE(part1_elsewhere.load());

  // Once the worker is healthy again (work that both threads share well), the pool tries it again
  // after the fallback and keeps it.
  auto shared = [](bool, int64_t count) { busy_for(std::chrono::microseconds(5 * count)); };
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int64_t on_workers = 0;
  while (on_workers == 0 && std::chrono::steady_clock::now() < give_up) {
    region_ran_alone(pool, shared, &on_workers);
  }
  EXPECT_GT(on_workers, 0) << "the pool never gave its worker work again";
}

TEST(ThreadPool, APoolWithoutTheFallbackWaitsForItsWorkers) {
  ThreadPool pool(2, /*may_run_alone=*/false);
  auto stalled = [](bool here, int64_t) {
    if (!here) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  for (int i = 0; i < 60; ++i) ASSERT_FALSE(region_ran_alone(pool, stalled)) << "region " << i;
  EXPECT_EQ(pool.stats().alone_regions, 0);
  EXPECT_EQ(pool.stats().fallbacks, 0);
  EXPECT_EQ(pool.stats().balanced_regions, 60);
}

TEST(ThreadPool, TheEnvironmentTurnsTheFallbackOnAndOff) {
  // The one-argument constructor reads SQUEEZE_POOL_FALLBACK: anything but "0" turns it on.
  auto stalled = [](bool here, int64_t count) {
    if (here) {
      busy_for(std::chrono::microseconds(5 * count));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  const char* before = std::getenv("SQUEEZE_POOL_FALLBACK");
  const std::string saved = before != nullptr ? before : "";
  for (const char* value : {"1", "0"}) {
    setenv("SQUEEZE_POOL_FALLBACK", value, 1);
    ThreadPool pool(2);
    bool alone = false;
    for (int i = 0; i < 120 && !alone; ++i) alone = region_ran_alone(pool, stalled);
    EXPECT_EQ(alone, std::string(value) == "1") << "SQUEEZE_POOL_FALLBACK=" << value;
  }
  if (before != nullptr) {
    setenv("SQUEEZE_POOL_FALLBACK", saved.c_str(), 1);
  } else {
    unsetenv("SQUEEZE_POOL_FALLBACK");
  }
}

TEST(ThreadPool, ConstructAndDestroyQuickly) {
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(1 + i % 4);
    if (i % 2 == 0) pool.parallel_for(10, [](int64_t, int64_t) {});
  }
}

TEST(ThreadPool, DefaultThreadCountIsPositive) { EXPECT_GE(default_thread_count(), 1); }

}  // namespace
}  // namespace sq
