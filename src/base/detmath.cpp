#include "base/detmath.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace sq::detmath {
namespace {

// ln 2 in two parts: the high part has trailing zero bits, so n * kLn2Hi is exact for |n| < 2^11.
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kInvLn2 = 1.44269504088896338700e+00;

// pi/2 in three parts (33 + 33 + 53 bits): k * kPio2_1 and k * kPio2_2 are exact for |k| < 2^20.
constexpr double kPio2_1 = 1.57079632673412561417e+00;
constexpr double kPio2_2 = 6.07710050630396597660e-11;
constexpr double kPio2_3 = 2.02226624879595063154e-21;
constexpr double kTwoOverPi = 6.36619772367581382433e-01;

// Taylor series on |r| <= pi/4, by Horner's rule in r^2.
double sin_poly(double r) {
  const double z = r * r;
  double p = 1.0 / 121645100408832000.0;  // 1/19!
  p = p * z - 1.0 / 355687428096000.0;    // 1/17!
  p = p * z + 1.0 / 1307674368000.0;      // 1/15!
  p = p * z - 1.0 / 6227020800.0;         // 1/13!
  p = p * z + 1.0 / 39916800.0;           // 1/11!
  p = p * z - 1.0 / 362880.0;             // 1/9!
  p = p * z + 1.0 / 5040.0;               // 1/7!
  p = p * z - 1.0 / 120.0;                // 1/5!
  p = p * z + 1.0 / 6.0;
  // p = 1/3! - z/5! + z^2/7! - ...; sin r = r - r^3 * p.
  return r - (r * z) * p;
}

double cos_poly(double r) {
  const double z = r * r;
  double p = 1.0 / 2432902008176640000.0;  // 1/20!
  p = p * z - 1.0 / 6402373705728000.0;    // 1/18!
  p = p * z + 1.0 / 20922789888000.0;      // 1/16!
  p = p * z - 1.0 / 87178291200.0;         // 1/14!
  p = p * z + 1.0 / 479001600.0;           // 1/12!
  p = p * z - 1.0 / 3628800.0;             // 1/10!
  p = p * z + 1.0 / 40320.0;               // 1/8!
  p = p * z - 1.0 / 720.0;                 // 1/6!
  p = p * z + 1.0 / 24.0;                  // 1/4!
  p = p * z - 1.0 / 2.0;                   // 1/2!
  return 1.0 + z * p;
}

// x = k * pi/2 + r with |r| <= pi/4 (for moderate |x|); returns r and the quadrant k mod 4.
double reduce(double x, int& quadrant) {
  const double k = std::floor(x * kTwoOverPi + 0.5);
  double r = x - k * kPio2_1;
  r = r - k * kPio2_2;
  r = r - k * kPio2_3;
  const double k4 = k - 4.0 * std::floor(k * 0.25);  // k mod 4, exact for |k| < 2^52
  quadrant = static_cast<int>(k4);
  return r;
}

}  // namespace

double exp(double x) {
  if (x != x) return x;
  if (x > 709.78) return std::numeric_limits<double>::infinity();
  if (x < -745.14) return 0.0;
  const double n = std::floor(x * kInvLn2 + 0.5);
  const double r = (x - n * kLn2Hi) - n * kLn2Lo;  // |r| <= 0.3466
  // Taylor series to r^13 (the next term is below 4e-18 relative).
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  return std::ldexp(p, static_cast<int>(n));  // exact scaling (rounds once if subnormal)
}

double log(double x) {
  if (x != x || x < 0) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0) return -std::numeric_limits<double>::infinity();
  if (x == std::numeric_limits<double>::infinity()) return x;
  int e = 0;
  double m = std::frexp(x, &e);  // x = m * 2^e, m in [0.5, 1): exact
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  // log m = 2 atanh(s) with s = (m - 1) / (m + 1), |s| <= 0.1716.
  const double f = m - 1.0;  // exact
  const double s = f / (2.0 + f);
  const double z = s * s;
  double p = 1.0 / 23.0;
  for (int k = 21; k >= 1; k -= 2) p = p * z + 1.0 / static_cast<double>(k);
  const double log_m = 2.0 * s * p;
  const double de = static_cast<double>(e);
  return de * kLn2Hi + (de * kLn2Lo + log_m);
}

double pow(double x, double y) {
  if (x == 1.0 || y == 0.0) return 1.0;
  if (!(x > 0)) return std::numeric_limits<double>::quiet_NaN();
  return detmath::exp(y * detmath::log(x));
}

double sin(double x) {
  if (!std::isfinite(x)) return x - x;
  int q = 0;
  const double r = reduce(x, q);
  switch (q) {
    case 0: return sin_poly(r);
    case 1: return cos_poly(r);
    case 2: return -sin_poly(r);
    default: return -cos_poly(r);
  }
}

double cos(double x) {
  if (!std::isfinite(x)) return x - x;
  int q = 0;
  const double r = reduce(x, q);
  switch (q) {
    case 0: return cos_poly(r);
    case 1: return -sin_poly(r);
    case 2: return -cos_poly(r);
    default: return sin_poly(r);
  }
}

}  // namespace sq::detmath
