#include "base/detmath.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <gtest/gtest.h>

#include "base/rng.h"

namespace sq {
namespace {

// The C library's long double functions serve as the reference: 64-bit mantissas, far more precise
// than the double results being checked.
double rel_err(double got, long double want) {
  if (want == 0) return std::fabs(got);
  return static_cast<double>(std::fabs((static_cast<long double>(got) - want) / want));
}

TEST(DetMath, SinCosMatchTheLibraryOnRotaryAngles) {
  Rng rng(7);
  double worst = 0;
  int float_mismatch = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    // Angles the rotary embedding uses: position (up to 1M) times a frequency in (0, 1].
    const float pos = static_cast<float>(rng.next_u64() % 1000000);
    const float freq = static_cast<float>(std::ldexp(rng.next_double() + 0.5, -static_cast<int>(rng.next_u64() % 24)));
    const double x = static_cast<double>(pos * freq);
    const long double s = sinl(static_cast<long double>(x));
    const long double c = cosl(static_cast<long double>(x));
    const double abs_s = std::fabs(detmath::sin(x) - static_cast<double>(s));
    const double abs_c = std::fabs(detmath::cos(x) - static_cast<double>(c));
    worst = std::max({worst, abs_s, abs_c});
    float_mismatch += static_cast<float>(detmath::sin(x)) != static_cast<float>(s);
    float_mismatch += static_cast<float>(detmath::cos(x)) != static_cast<float>(c);
  }
  EXPECT_LT(worst, 1e-15);  // absolute: sin and cos are at most 1
  // Rounded to float, the results are the correctly rounded ones except in near-ties.
  EXPECT_LT(float_mismatch, n / 1000) << float_mismatch;
}

TEST(DetMath, SinCosSmallAndSpecialArguments) {
  EXPECT_EQ(detmath::sin(0.0), 0.0);
  EXPECT_EQ(detmath::cos(0.0), 1.0);
  for (double x : {1e-300, 1e-10, 0.5, 0.785398, 1.0, 2.0, 3.14159, -1.0, -100.0, 12345.678}) {
    EXPECT_LT(rel_err(detmath::sin(x), sinl(static_cast<long double>(x))), 1e-14) << x;
    EXPECT_LT(rel_err(detmath::cos(x), cosl(static_cast<long double>(x))), 1e-14) << x;
  }
  EXPECT_TRUE(std::isnan(detmath::sin(std::numeric_limits<double>::infinity())));
  EXPECT_TRUE(std::isnan(detmath::cos(std::numeric_limits<double>::quiet_NaN())));
}

TEST(DetMath, ExpLogPow) {
  Rng rng(11);
  double worst_exp = 0, worst_log = 0, worst_pow = 0;
  for (int i = 0; i < 100000; ++i) {
    const double x = (rng.next_double() * 2 - 1) * 700;
    worst_exp = std::max(worst_exp, rel_err(detmath::exp(x), expl(static_cast<long double>(x))));
    const double y = std::ldexp(rng.next_double() + 0.5, static_cast<int>(rng.next_u64() % 200) - 100);
    worst_log = std::max(worst_log, std::fabs(detmath::log(y) - static_cast<double>(logl(static_cast<long double>(y)))) /
                                        std::max(1.0, std::fabs(static_cast<double>(logl(static_cast<long double>(y))))));
    // Rotary bases and exponents: base 1e4..1e6, exponent in [0, 1).
    const double base = 1e4 * (1 + rng.next_double() * 99);
    const double e = rng.next_double();
    worst_pow = std::max(worst_pow, rel_err(detmath::pow(base, e), powl(static_cast<long double>(base), static_cast<long double>(e))));
  }
  EXPECT_LT(worst_exp, 1e-15);
  EXPECT_LT(worst_log, 1e-15);
  EXPECT_LT(worst_pow, 1e-14);
  EXPECT_EQ(detmath::exp(0.0), 1.0);
  EXPECT_EQ(detmath::log(1.0), 0.0);
  EXPECT_EQ(detmath::pow(10000.0, 0.0), 1.0);
  EXPECT_EQ(detmath::exp(-1000.0), 0.0);
  EXPECT_TRUE(std::isinf(detmath::exp(1000.0)));
  EXPECT_TRUE(std::isinf(detmath::log(0.0)));
  EXPECT_TRUE(std::isnan(detmath::log(-1.0)));
}

}  // namespace
}  // namespace sq
