#include "engine/stop.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/rng.h"

namespace sq {
namespace {

// Feeds `pieces` and returns everything emitted (including finish() when not stopped).
struct Outcome {
  std::string text;
  bool stopped = false;
};

Outcome feed(StopMatcher& m, const std::vector<std::string>& pieces) {
  Outcome r;
  for (const std::string& p : pieces) {
    StopMatcher::Result res = m.push(p);
    r.text += res.emit;
    if (res.stopped) {
      r.stopped = true;
      break;
    }
  }
  if (!r.stopped) r.text += m.finish();
  return r;
}

// The specification, byte by byte: the text up to the first stop string to complete.
Outcome reference(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = std::string::npos;
    for (const std::string& s : stops) {
      if (s.empty() || s.size() > end) continue;
      if (text.compare(end - s.size(), s.size(), s) == 0) best = std::min(best, end - s.size());
    }
    if (best != std::string::npos) return {text.substr(0, best), true};
  }
  return {text, false};
}

TEST(StopMatcher, NoStopsPassEverythingThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.push("hello ").emit, "hello ");
  EXPECT_EQ(m.push("world").emit, "world");
  EXPECT_EQ(m.finish(), "");

  StopMatcher empty({"", ""});  // empty stops are ignored
  StopMatcher::Result r = empty.push("abc");
  EXPECT_EQ(r.emit, "abc");
  EXPECT_FALSE(r.stopped);
}

TEST(StopMatcher, StopSplitAcrossPieces) {
  StopMatcher m({"</s>"});
  StopMatcher::Result r = m.push("Hello <");
  EXPECT_EQ(r.emit, "Hello ");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.held(), 1u);
  r = m.push("/s");
  EXPECT_EQ(r.emit, "");
  EXPECT_FALSE(r.stopped);
  r = m.push(">more text");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.finish(), "");
  // Stays stopped.
  r = m.push("again");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.emit, "");
}

TEST(StopMatcher, TextBeforeTheStopInTheSamePieceIsEmitted) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.push("abc").emit, "abc");
  StopMatcher::Result r = m.push("deSTOPfg");
  EXPECT_EQ(r.emit, "de");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, PartialPrefixHeldThenReleasedWhenItDiverges) {
  StopMatcher m({"</s>"});
  EXPECT_EQ(m.push("a </").emit, "a ");
  StopMatcher::Result r = m.push("b>");
  EXPECT_EQ(r.emit, "</b>");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.held(), 0u);
}

TEST(StopMatcher, OverlappingPrefixes) {
  StopMatcher m({"aab"});
  EXPECT_EQ(m.push("a").emit, "");
  EXPECT_EQ(m.push("a").emit, "");
  EXPECT_EQ(m.push("a").emit, "a");  // "aaa": only the last "aa" can still start the stop
  StopMatcher::Result r = m.push("b");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, MultipleStops) {
  StopMatcher m({"\n\n", "User:"});
  EXPECT_EQ(m.push("foo\nUs").emit, "foo\n");
  StopMatcher::Result r = m.push("er: hi");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);

  StopMatcher n({"\n\n", "User:"});
  EXPECT_EQ(n.push("line\n").emit, "line");
  r = n.push("\nUser:");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, FirstStopToCompleteWins) {
  // "bc" completes before "abcd" would, however the text is cut.
  StopMatcher m({"abcd", "bc"});
  StopMatcher::Result r = m.push("xabcd");
  EXPECT_EQ(r.emit, "xa");
  EXPECT_TRUE(r.stopped);

  StopMatcher n({"abcd", "bc"});
  EXPECT_EQ(feed(n, {"x", "a", "b", "c", "d"}).text, "xa");

  // Completing at the same byte: the longer stop removes more.
  StopMatcher o({"c", "abc"});
  r = o.push("xxabcyy");
  EXPECT_EQ(r.emit, "xx");
}

TEST(StopMatcher, StopAtTheVeryStart) {
  StopMatcher m({"<|im_end|>"});
  StopMatcher::Result r = m.push("<|im_end|>");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);

  StopMatcher n({"<|im_end|>"});
  EXPECT_EQ(n.push("<|im").emit, "");
  r = n.push("_end|>trailing");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcher, FinishReleasesHeldText) {
  StopMatcher m({"</s>"});
  EXPECT_EQ(m.push("abc</").emit, "abc");
  EXPECT_EQ(m.finish(), "</");
  EXPECT_EQ(m.finish(), "");
  m.reset();
  EXPECT_EQ(m.push("x</s>").emit, "x");
  EXPECT_TRUE(m.stopped());
  m.reset();
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.push("fresh").emit, "fresh");
}

TEST(StopMatcher, MultiByteUtf8) {
  const std::string stop = "你好";  // e4 bd a0 e5 a5 bd
  const std::string text = "我说你好吗";
  StopMatcher m({stop});
  // One byte at a time: the matcher holds partial characters of the stop, never emits them.
  std::string out;
  bool stopped = false;
  for (char c : text) {
    StopMatcher::Result r = m.push(std::string(1, c));
    out += r.emit;
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "我说");

  // A character sharing the stop's first byte but not the rest is released whole.
  StopMatcher n({stop});
  EXPECT_EQ(n.push("\xe4").emit, "");
  EXPECT_EQ(n.push("\xbd").emit, "");
  StopMatcher::Result r = n.push("\xa1");  // 你 is e4 bd a0; e4 bd a1 is 佡
  EXPECT_EQ(r.emit, "\xe4\xbd\xa1");
  EXPECT_FALSE(r.stopped);
}

TEST(StopMatcher, ResultDoesNotDependOnHowTextIsCut) {
  const std::vector<std::string> stops = {"abab", "ba", "cab", "ccc", "bcb"};
  Rng rng(2024);
  int stopped_runs = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    size_t len = 1 + rng.next_u64() % 24;
    for (size_t i = 0; i < len; ++i) text += "abc"[rng.next_u64() % 3];
    // Only a subset of stops per trial, so that some runs finish unstopped.
    std::vector<std::string> use;
    for (const std::string& s : stops) {
      if (rng.next_u64() % 3 == 0) use.push_back(s);
    }
    std::vector<std::string> pieces;
    for (size_t at = 0; at < text.size();) {
      size_t n = 1 + rng.next_u64() % 5;
      pieces.push_back(text.substr(at, n));
      at += n;
    }
    StopMatcher m(use);
    Outcome got = feed(m, pieces);
    Outcome want = reference(text, use);
    ASSERT_EQ(got.text, want.text) << "text '" << text << "' trial " << trial;
    ASSERT_EQ(got.stopped, want.stopped) << "text '" << text << "'";
    stopped_runs += got.stopped;
  }
  EXPECT_GT(stopped_runs, 200);
  EXPECT_LT(stopped_runs, 1900);
}

}  // namespace
}  // namespace sq
