// lk_layout.h: what both engines read from a generated formula's tables: how they pack
// its arguments, and whether its sums over wide variables come in chunks.
//
// The generated `struct LkFormula` lists each argument's category (CAT) and dimension
// (DIM). The engines store the arguments of one category contiguously, one after the
// other: packed_offset gives where argument `pos` starts among those of its category.
#pragma once

#include "lk_std.h"

#include "lk_math.h"  // LK_HD

#ifndef LK_CHUNK
#error "LK_CHUNK undefined: the generated source defines it (compile/codegen.py)"
#endif

namespace lk {

enum { CAT_I = 0, CAT_J = 1, CAT_P = 2 };

// Offset of argument `pos` among the arguments of category `cat`, counted in scalars.
template <class F>
LK_HD constexpr int packed_offset(int cat, int pos) {
  int o = 0;
  for (int v = 0; v < pos; ++v)
    if (F::CAT[v] == cat) o += F::DIM[v];
  return o;
}

template <class F>
LK_HD constexpr int packed_size(int cat) { return packed_offset<F>(cat, F::NARGS); }

// Components per chunk, the length chunk_full covers: compile/chunking.py's CHUNK, which
// the generated source defines as LK_CHUNK (compile/codegen.py: engine_defines).
constexpr int CHUNK = LK_CHUNK;

// Formulas rendered with a chunk plan (compile/chunking.py) define WIDE: both engines
// then accumulate their sums over wide variables chunk by chunk before `eval`.
template <class F, class = void>
struct IsChunked : std::false_type {};
template <class F>
struct IsChunked<F, std::void_t<decltype(F::WIDE)>> : std::true_type {};

// fn(std::integral_constant<int, V>()) for V = 0 .. N-1, unrolled at compile time: device
// code may read F::CAT[V] and F::DIM[V] only with V a constant expression.
template <class Fn, int... V>
LK_HD LK_INLINE void static_for_impl(Fn& fn, std::integer_sequence<int, V...>) {
  (fn(std::integral_constant<int, V>()), ...);
}

template <int N, class Fn>
LK_HD LK_INLINE void static_for(Fn&& fn) {
  static_for_impl(fn, std::make_integer_sequence<int, N>());
}

}  // namespace lk
