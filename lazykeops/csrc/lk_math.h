// lk_math.h: scalar math used by generated formula code and the engines, valid for g++
// and nvcc (and inf, nan, largest: the special values the reduction policies start from).
//
// Generated formulas call lk::exp, lk::log, ... on a template type T (float or double).
// On the host, exp is a branch-free polynomial so that the compiler can vectorise the
// inner loop over j (glibc's exp is a scalar call and blocks SIMD); the other functions go
// to <cmath>. On the device they go to CUDA's math library.
#pragma once

#include "lk_std.h"

// LK_UNROLL precedes every loop of a generated formula: fully unrolled loops let the
// CPU engine vectorise its loop over j (gcc gives up on a loop nest holding inner loops).
// The generated source defines LK_MAX_UNROLL (compile/codegen.py's MAX_UNROLL, the
// longest loop it marks): gcc unrolls up to that many iterations.
#ifndef LK_MAX_UNROLL
#error "LK_MAX_UNROLL undefined: the generated source defines it (compile/codegen.py)"
#endif
#define LK_PRAGMA(text) _Pragma(#text)
#define LK_GCC_UNROLL(n) LK_PRAGMA(GCC unroll n)
#ifdef __CUDACC__
#define LK_HD __host__ __device__
#define LK_INLINE __forceinline__
#define LK_UNROLL _Pragma("unroll")
#define LK_NO_UNROLL _Pragma("unroll 1")
#else
#define LK_HD
#define LK_INLINE inline __attribute__((always_inline))
#define LK_UNROLL LK_GCC_UNROLL(LK_MAX_UNROLL)
#define LK_NO_UNROLL LK_GCC_UNROLL(1)
#endif

// <cmath>'s float overloads live in std:: on the host; CUDA's device overloads are global.
#if defined(__CUDA_ARCH__)
#define LK_STD
#else
#define LK_STD std
#endif

namespace lk {

// INFINITY and NAN rather than numeric_limits: usable in device code without relaxed
// constexpr.
template <class T> LK_HD LK_INLINE T inf() { return T(INFINITY); }
template <class T> LK_HD LK_INLINE T nan() { return T(NAN); }
template <class T> LK_HD LK_INLINE bool is_nan(T v) { return v != v; }
// The largest finite value (numeric_limits is host-only code for nvcc).
template <class T> LK_HD LK_INLINE T largest() {
  return std::is_same_v<T, float> ? T(__FLT_MAX__) : T(__DBL_MAX__);
}

#if !defined(__CUDA_ARCH__)
// exp(x) = 2^n * e^r with n = round(x / ln 2), |r| <= ln(2) / 2, e^r by its Taylor series
// (degree 7 for float, 13 for double: truncation below half an ulp). ln 2 is split in a
// high part exact in few bits and a low part, so that x - n ln2 is computed exactly.
LK_INLINE float exp_poly(float x) {
  const float hi = 88.72283f, lo = -87.33654f;
  float xc = x < lo ? lo : (x > hi ? hi : x);
  float n = __builtin_floorf(xc * 1.44269504f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // n is in [-126, 128]: 2^n built in two halves so that n = 128 does not overflow early.
  int32_t ni = (int32_t)n;
  int32_t n1 = ni >> 1, n2 = ni - n1;
  float s1 = __builtin_bit_cast(float, (n1 + 127) << 23);
  float s2 = __builtin_bit_cast(float, (n2 + 127) << 23);
  float res = p * s1 * s2;
  res = x > hi ? std::numeric_limits<float>::infinity() : res;
  res = x < lo ? 0.0f : res;
  return x != x ? x : res;
}

LK_INLINE double exp_poly(double x) {
  const double hi = 709.782712893384, lo = -708.3964185322641;
  double xc = x < lo ? lo : (x > hi ? hi : x);
  double n = __builtin_floor(xc * 1.4426950408889634 + 0.5);
  double r = xc - n * 0.6931471803691238;
  r = r - n * 1.9082149292705877e-10;
  double p = 1.0 / 6227020800.0;
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
  int64_t ni = (int64_t)n;
  int64_t n1 = ni >> 1, n2 = ni - n1;
  double s1 = __builtin_bit_cast(double, (n1 + 1023) << 52);
  double s2 = __builtin_bit_cast(double, (n2 + 1023) << 52);
  double res = p * s1 * s2;
  res = x > hi ? std::numeric_limits<double>::infinity() : res;
  res = x < lo ? 0.0 : res;
  return x != x ? x : res;
}
#endif

template <class T>
LK_HD LK_INLINE T exp(T x) {
#if defined(__CUDA_ARCH__)
  return LK_STD::exp(x);
#else
  return exp_poly(x);
#endif
}

#if defined(__CUDA_ARCH__)
// float on the GPU: the hardware exp2 unit (a few ulp), as the CPU polynomial's accuracy.
// Its flush-to-zero form: results below 2^-126 become 0, and each call saves the three
// instructions that the denormal-preserving form (__expf's) spends around it.
template <>
__device__ LK_INLINE float exp<float>(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x * 1.44269504088896341f));
  return y;
}
#endif

template <class T> LK_HD LK_INLINE T log(T x) { return LK_STD::log(x); }
template <class T> LK_HD LK_INLINE T sin(T x) { return LK_STD::sin(x); }
template <class T> LK_HD LK_INLINE T cos(T x) { return LK_STD::cos(x); }
template <class T> LK_HD LK_INLINE T asin(T x) { return LK_STD::asin(x); }
template <class T> LK_HD LK_INLINE T acos(T x) { return LK_STD::acos(x); }
template <class T> LK_HD LK_INLINE T atan(T x) { return LK_STD::atan(x); }
template <class T> LK_HD LK_INLINE T atan2(T y, T x) { return LK_STD::atan2(y, x); }
template <class T> LK_HD LK_INLINE T sqrt(T x) { return LK_STD::sqrt(x); }
template <class T> LK_HD LK_INLINE T pow(T x, T y) { return LK_STD::pow(x, y); }
template <class T> LK_HD LK_INLINE T floor(T x) { return LK_STD::floor(x); }
template <class T> LK_HD LK_INLINE T round(T x) { return LK_STD::round(x); }
template <class T> LK_HD LK_INLINE T abs(T x) { return x < T(0) ? -x : x; }

// The conventions below follow pykeops: 1/sqrt(0) = 0, 0 log 0 = 0, sin(0)/0 = 1.
template <class T> LK_HD LK_INLINE T rsqrt(T x) { return x == T(0) ? T(0) : T(1) / LK_STD::sqrt(x); }
template <class T> LK_HD LK_INLINE T xlogx(T x) { return x == T(0) ? T(0) : x * LK_STD::log(x); }
template <class T> LK_HD LK_INLINE T sinxdivx(T x) { return x == T(0) ? T(1) : LK_STD::sin(x) / x; }
template <class T> LK_HD LK_INLINE T sign(T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)); }
template <class T> LK_HD LK_INLINE T step(T x) { return x >= T(0) ? T(1) : T(0); }  // NaN: 0, as torch
template <class T> LK_HD LK_INLINE T relu(T x) { return x < T(0) ? T(0) : x; }

#if defined(__CUDA_ARCH__)
// float on the GPU: the hardware square-root and reciprocal-square-root units (about 1
// and 2 ulp, as exp's above), not the IEEE-rounded sqrt that nvcc builds from a dozen
// instructions (and a division for 1/sqrt): Matern and Laplacian kernels take one per pair
// and their gradients one more. sqrt.approx keeps 0, +inf, NaN and subnormals as sqrt does;
// rsqrt takes the exact path for subnormal inputs.
template <>
__device__ LK_INLINE float sqrt<float>(float x) {
  float y;
  asm("sqrt.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
template <>
__device__ LK_INLINE float rsqrt<float>(float x) {
  if (x == 0.0f) return 0.0f;  // pykeops's convention, as the generic rsqrt
  if (x > 0.0f && x < 1.17549435e-38f) return 1.0f / LK_STD::sqrt(x);  // subnormal: exact path
  float y;
  asm("rsqrt.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
#endif
template <class T> LK_HD LK_INLINE T clamp(T x, T a, T b) { return x < a ? a : (x > b ? b : x); }
template <class T> LK_HD LK_INLINE T ifelse(T c, T a, T b) { return c >= T(0) ? a : b; }
template <class T> LK_HD LK_INLINE T mod(T x, T n, T d) { return x - n * LK_STD::floor((x - d) / n); }
// Round(x, d): x rounded to d decimals.
template <class T> LK_HD LK_INLINE T round_to(T x, T scale) { return LK_STD::round(x * scale) / scale; }

// Pow(x, n) by squaring; n is any int64 (the formula's rule excludes INT64_MIN), so that
// exponents past 2^31 are not truncated.
template <class T> LK_HD LK_INLINE T int_pow(T x, int64_t n) {
  T base = n < 0 ? T(1) / x : x;
  uint64_t e = n < 0 ? uint64_t(-n) : uint64_t(n);
  T r = T(1);
  while (e) {
    if (e & 1u) r *= base;
    base *= base;
    e >>= 1u;
  }
  return r;
}

}  // namespace lk
