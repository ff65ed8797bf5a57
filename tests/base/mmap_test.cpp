// AnonymousMemory: usable zero-filled memory of the size asked, and a null data() (not a throw or a
// crash) when the system refuses the mapping, so that each caller can word its own error.
#include <cerrno>
#include <cstdint>

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace sq
