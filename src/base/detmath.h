// squeeze's own elementary functions for the deterministic path (DESIGN.md, invariant 3).
//
// The C library's sin, cos, exp, log and pow differ in their last bit between libraries, versions
// and even CPUs (glibc picks FMA variants at run time), and a compressed archive must decode to the
// same probabilities on every machine. These are written with double-precision additions and
// multiplications only, in a fixed order (the project builds with -ffp-contract=off), so they give
// the same bits everywhere. Relative error is below 1e-15 over the ranges the model uses, so a
// result rounded to float is the correctly rounded one except in rare near-ties.
#pragma once

namespace sq::detmath {

// e^x. Returns +inf above 709.78, 0 below -745.13; NaN gives NaN.
double exp(double x);
// Natural logarithm for x > 0 (finite); x == 0 gives -inf, x < 0 or NaN gives NaN, +inf gives +inf.
double log(double x);
// x^y for x > 0 as exp(y * log(x)) with the product carried in two parts; x == 1 or y == 0 gives 1.
// Other x (zero, negative) give NaN: the model never needs them.
double pow(double x, double y);
// Sine and cosine with Cody-Waite reduction by pi/2 in three parts: accurate for |x| < 2^30,
// which covers every rotary angle (positions times frequencies at most 1). Larger |x| lose
// accuracy but stay deterministic.
double sin(double x);
double cos(double x);

}  // namespace sq::detmath
