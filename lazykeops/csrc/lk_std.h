// lk_std.h: the few standard-library facilities the engine headers use: from the system's
// headers under g++ and nvcc; under NVRTC, which has none, from the definitions below.
//
// NVRTC (the in-process CUDA compiler, compile/nvrtc.py) finds no <type_traits> or
// <cstdint>; libcu++'s versions (<cuda/std/...>) work but cost 0.44 s of parsing per
// compile on the 2-core CPU machine, more than a whole Gaussian kernel (0.15 s). Only
// device code is compiled there: the engines' host sides are left out (__CUDACC_RTC__).
#pragma once

#ifndef __CUDACC_RTC__
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#else
// The widths of Linux x86-64 and aarch64 (LP64), as <cstdint> has them for nvcc.
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
typedef unsigned long uintptr_t;

namespace std {
template <class T, T v>
struct integral_constant {
  static constexpr T value = v;
  using type = integral_constant;
  __host__ __device__ constexpr operator T() const { return v; }
};
using true_type = integral_constant<bool, true>;
using false_type = integral_constant<bool, false>;

template <class A, class B> struct is_same : false_type {};
template <class A> struct is_same<A, A> : true_type {};
template <class A, class B> inline constexpr bool is_same_v = is_same<A, B>::value;

template <bool C, class A, class B> struct conditional { using type = A; };
template <class A, class B> struct conditional<false, A, B> { using type = B; };
template <bool C, class A, class B> using conditional_t = typename conditional<C, A, B>::type;

template <class...> using void_t = void;

// Integer sequences of int only (static_for's).
template <class T, T... I> struct integer_sequence {};
template <int N, int... I> struct int_sequence_of : int_sequence_of<N - 1, N - 1, I...> {};
template <int... I> struct int_sequence_of<0, I...> { using type = integer_sequence<int, I...>; };
template <class T, T N> using make_integer_sequence = typename int_sequence_of<N>::type;
}  // namespace std

// <cmath>'s special values, as device bit patterns; the compilers' largest finite values.
#define INFINITY __int_as_float(0x7f800000)
#define NAN __int_as_float(0x7fffffff)
#ifndef __FLT_MAX__
#define __FLT_MAX__ 3.40282346638528859811704183484516925e+38F
#endif
#ifndef __DBL_MAX__
#define __DBL_MAX__ double(1.79769313486231570814527423731704357e+308L)
#endif
#endif
