// AnonymousMemory: usable zero-filled memory of the size asked, and a null data() (not a throw or a
// crash) when the system refuses the mapping, so that each caller can word its own error;
// allocate_anonymous words it for the callers that only need to say what the memory was for.
#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/mmap.h"

namespace sq {
namespace {

TEST(AnonymousMemory, IsZeroFilledAndWritable) {
  const size_t n = (size_t{3} << 20) + 123;  // not a multiple of a page or of a huge page
  AnonymousMemory m(n);
  ASSERT_NE(m.data(), nullptr);
  EXPECT_EQ(m.size(), n);
  EXPECT_EQ(m.data()[0], 0);
  EXPECT_EQ(m.data()[n - 1], 0);
  m.data()[0] = 7;
  m.data()[n - 1] = 9;
  EXPECT_EQ(m.data()[0] + m.data()[n - 1], 16);
}

TEST(AnonymousMemory, RefusedMappingLeavesDataNull) {
  errno = 0;
  AnonymousMemory m(size_t{1} << 62);  // far beyond any address space this runs in
  EXPECT_EQ(m.data(), nullptr);
  EXPECT_EQ(m.size(), 0u);
  EXPECT_NE(errno, 0);
}

TEST(AnonymousMemory, MovesOwnership) {
  AnonymousMemory a(4096);
  ASSERT_NE(a.data(), nullptr);
  a.data()[5] = 42;
  uint8_t* const p = a.data();
  AnonymousMemory b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.data()[5], 42);
  AnonymousMemory c(8192);
  c = std::move(b);  // c's own mapping is released, b's taken over
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.size(), 4096u);
  EXPECT_EQ(b.data(), nullptr);
  const AnonymousMemory empty(0);
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size(), 0u);
}

TEST(AnonymousMemory, AllocateNamesWhatItCouldNotMap) {
  EXPECT_EQ(allocate_anonymous(0, "nothing").data(), nullptr);  // zero bytes is not an error
  EXPECT_NE(allocate_anonymous(100, "a little").data(), nullptr);
  try {
    (void)allocate_anonymous(size_t{1} << 62, "the KV cache's keys");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("the KV cache's keys"), std::string::npos) << what;
    EXPECT_NE(what.find("4398046511104 MiB"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace sq
