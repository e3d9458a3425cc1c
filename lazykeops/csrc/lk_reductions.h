// lk_reductions.h: reduction policies shared by the engines.
//
// A policy reduces the formula values of one output row over the reduced index, with one
// accumulation algorithm for both engines:
//   VALS, IDXS          widths of the value output (type T) and index output (int64)
//   Acc<T>              a partial result in the compute type T (GPU registers, CPU tiles)
//   acc_init(Acc&), acc_push(Acc&, r, j)
//                       start empty; add term j, whose component k is r[k] (r: a pointer,
//                       or a column of the CPU engine's tile buffer)
//   State               the running result of one row, in double (Acc<double> for every
//                       policy but Sum, whose State also carries a Kahan compensation)
//   init(State&), acc_fold(State&, const Acc<S>&)
//                       fold a partial result (Acc<T>, or another State) into the State
//   merge(State&, const State&)
//                       combine two results over disjoint ranges (split schemes): acc_fold
//   finalize(const State&, T* vals, int64_t* idx)
//   ACC_PER_TILE        true (sums): a tile's terms go to a fresh Acc<T> folded into the
//                       State at the tile's end (partials in T within a tile, double
//                       across); false (exact selections): terms go straight to the State
//                       on the CPU, to one Acc<T> spanning the thread's range on the GPU
//   tile_acc(Acc&, buf, ld, n)
//                       sums only: acc_push of n terms at once for the CPU engine, whose
//                       tile holds component k of term j at buf[k * ld + j]: the same
//                       accumulator, computed with loops that vectorise (a block maximum
//                       then one exp per term for LogSumExp, where acc_push rescales online)
//   first_index(Acc&, j) extrema only (start_at): the index they report until a term beats
//                       their start value; j = the range's first term, -1 for none
// lk_cpu_engine.h's `fold_tile` is the CPU engine's use of them.
// Partial sums of a tile are kept in T (SIMD lanes, GPU registers) and carried across
// tiles in double: a float32 sum over 1e6 terms stays within about 1e-7 of the exact value.
//
// NaN terms behave as in torch: Sum and SumSoftMaxWeight give NaN, LogSumExp too unless a
// term is +inf (then +inf); Min, Max and their Arg* select the first NaN (torch.min/max
// propagate it); KMin and ArgKMin order NaN after the numbers (as torch.topk), so a NaN is
// selected only when fewer than K numbers remain. The per-term paths cost what they did
// without NaN handling (one comparison for Min, Max and KMin, no test in LogSumExp's
// accumulator); NaN is sorted out in the rare branches and when states are folded.
#pragma once

#include "lk_std.h"

#include "lk_math.h"

namespace lk {

// ---------------------------------------------------------------- Sum
struct BlockSum {};   // tile partials in T, carried in double (default)
struct KahanSum {};   // tile partials in T, carried in T with Kahan compensation
struct DirectSum {};  // tile partials in T, carried in T

template <int D, class Scheme>
struct SumRed {
  static constexpr int VALS = D, IDXS = 0;
  static constexpr bool ACC_PER_TILE = true;
  template <class T> struct Acc { T s[D]; };
  struct State { double s[D]; double c[D]; };
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    for (int k = 0; k < D; ++k) a.s[k] = T(0);
  }
  template <class T, class Row>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const Row& r, int64_t) {
    for (int k = 0; k < D; ++k) a.s[k] += r[k];
  }
  template <class T>
  static LK_INLINE void tile_acc(Acc<T>& a, const T* buf, int ld, int n) {
    for (int k = 0; k < D; ++k) {
      const T* row = buf + (int64_t)k * ld;
      T part = 0;
#pragma omp simd reduction(+ : part)
      for (int j = 0; j < n; ++j) part += row[j];
      a.s[k] = part;
    }
  }
  LK_HD static void init(State& st) {
    for (int k = 0; k < D; ++k) { st.s[k] = 0; st.c[k] = 0; }
  }
  template <class T>
  LK_HD static LK_INLINE void add(State& st, int k, T part) {
    if constexpr (std::is_same_v<Scheme, KahanSum>) {
      T y = part - T(st.c[k]);
      T t = T(st.s[k]) + y;
      st.c[k] = (t - T(st.s[k])) - y;
      st.s[k] = t;
    } else if constexpr (std::is_same_v<Scheme, DirectSum>) {
      st.s[k] = T(T(st.s[k]) + part);
    } else {
      st.s[k] += part;
    }
  }
  template <class T>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<T>& a) {
    for (int k = 0; k < D; ++k) add(st, k, a.s[k]);
  }
  LK_HD static void merge(State& st, const State& o) {  // the partner's compensated sum
    for (int k = 0; k < D; ++k) st.s[k] += o.s[k] - o.c[k];
  }
  template <class T>
  LK_HD static void finalize(const State& st, T* vals, int64_t*) {
    for (int k = 0; k < D; ++k) vals[k] = T(st.s[k]);
  }
};

// ---------------------------------------------------------------- DualSum
// Two sums in one pass, for gradients: the first DX components of the formula are summed
// over j (one row per i, like Sum), the last DY over i (one row per j, accumulated by the
// engine in per-thread column buffers). Both sides share each pair's evaluation, so the
// gradients of a Sum with respect to x_i and y_j cost one kernel instead of two.
// COL_FIRST: where the column components start in the formula's output; COL_SIGN: -1 when
// the columns are the negated rows (gradients of kernels of x - y), which then are not
// computed twice.
template <int DX, int DY, int FIRST = DX, int SIGN = 1>
struct DualSumRed : SumRed<DX, BlockSum> {
  static constexpr int COLS = DY, COL_FIRST = FIRST, COL_SIGN = SIGN;
};

// COLS of a policy, 0 for those without column outputs.
template <class R, class = void>
struct ColumnCount { static constexpr int value = 0; };
template <class R>
struct ColumnCount<R, std::void_t<decltype(R::COLS)>> { static constexpr int value = R::COLS; };

// ---------------------------------------------------------------- LogSumExp
// Online and stable: the running maximum m and s = sum exp(f - m) * w. E = 0 means no
// weights (then each of the D components is reduced on its own); with weights, f is
// component 0 of a term and the E weights follow it. An accumulator starts from the
// lowest finite value rather than -inf: s = 0 keeps it neutral, and -inf terms then give
// exp(-inf - m) = 0 with no special case. m = +inf marks a +inf term (the result,
// whatever else comes: two +inf terms make s NaN); a NaN term, or a NaN weight, makes the
// sums it enters NaN by plain arithmetic, and they stay NaN.
template <int D, int E>
struct LogSumExpRed {
  static constexpr int W = E == 0 ? D : E;  // number of (m, s) accumulators per max
  static constexpr int NM = E == 0 ? D : 1; // number of maxima
  static constexpr int VALS = W, IDXS = 0;
  static constexpr bool ACC_PER_TILE = true;
  template <class T> struct Acc { T m[NM]; T s[W]; };
  using State = Acc<double>;
  LK_HD static LK_INLINE int first(int g) { return E == 0 ? g : 0; }  // of max g's sums
  LK_HD static LK_INLINE int count() { return E == 0 ? 1 : W; }
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    for (int k = 0; k < NM; ++k) a.m[k] = -largest<T>();
    for (int k = 0; k < W; ++k) a.s[k] = T(0);
  }
  // One exp per term: the smaller of (f, m) is rescaled to the larger.
  template <class T, class Row>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const Row& r, int64_t) {
    for (int g = 0; g < NM; ++g) {
      const T f = r[g];
      const bool up = f > a.m[g];  // false for NaN f: then the scale below is NaN
      const T scale = lk::exp(up ? a.m[g] - f : f - a.m[g]);
      for (int k = first(g); k < first(g) + count(); ++k) {
        const T w = E == 0 ? T(1) : r[1 + k];
        a.s[k] = up ? a.s[k] * scale + w : a.s[k] + scale * w;
      }
      a.m[g] = up ? f : a.m[g];
    }
  }
  // The tile's maximum first (NaN skipped; the lowest finite value when there is none),
  // then one exp per term against it.
  template <class T>
  static LK_INLINE void tile_acc(Acc<T>& a, const T* buf, int ld, int n) {
    for (int g = 0; g < NM; ++g) {
      const T* f = buf + (int64_t)g * ld;
      T tm = a.m[g];
#pragma omp simd reduction(max : tm)
      for (int j = 0; j < n; ++j) tm = f[j] > tm ? f[j] : tm;
      a.m[g] = tm;
      if (tm == inf<T>()) continue;
      for (int k = first(g); k < first(g) + count(); ++k) {
        const T* w = buf + (int64_t)(1 + k) * ld;
        T part = 0;
#pragma omp simd reduction(+ : part)
        for (int j = 0; j < n; ++j) part += lk::exp(f[j] - tm) * (E == 0 ? T(1) : w[j]);
        a.s[k] = part;
      }
    }
  }
  LK_HD static void init(State& st) {
    for (int k = 0; k < NM; ++k) st.m[k] = -inf<double>();
    for (int k = 0; k < W; ++k) st.s[k] = 0;
  }
  // A maximum is never NaN (comparisons skip NaN terms); -inf only in an empty State.
  template <class S>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<S>& a) {
    for (int g = 0; g < NM; ++g) {
      const double tm = a.m[g];
      if (st.m[g] == inf<double>() || tm == -inf<double>()) continue;
      if (tm == inf<double>()) { st.m[g] = inf<double>(); continue; }  // a.s may be NaN
      const bool up = tm > st.m[g];
      const double scale = lk::exp(up ? st.m[g] - tm : tm - st.m[g]);
      for (int k = first(g); k < first(g) + count(); ++k)
        st.s[k] = up ? st.s[k] * scale + double(a.s[k]) : st.s[k] + double(a.s[k]) * scale;
      if (up) st.m[g] = tm;
    }
  }
  LK_HD static void merge(State& st, const State& o) { acc_fold(st, o); }
  template <class T>
  LK_HD static void finalize(const State& st, T* vals, int64_t*) {
    for (int k = 0; k < W; ++k) {
      double m = st.m[E == 0 ? k : 0];
      vals[k] = m == inf<double>() ? inf<T>() : T(m + LK_STD::log(st.s[k]));
    }
  }
};

// ---------------------------------------------------------------- SumSoftMaxWeight
// sum_j exp(f_j) w_j / sum_j exp(f_j): a weighted LogSumExp with one more weight, 1.
template <int E>
struct SoftMaxRed {
  using Wsum = LogSumExpRed<1, E>;
  using Zsum = LogSumExpRed<1, 0>;
  static constexpr int VALS = E, IDXS = 0;
  static constexpr bool ACC_PER_TILE = true;
  template <class T>
  struct Acc { typename Wsum::template Acc<T> w; typename Zsum::template Acc<T> z; };
  using State = Acc<double>;
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    Wsum::acc_init(a.w);
    Zsum::acc_init(a.z);
  }
  template <class T, class Row>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const Row& r, int64_t j) {
    Wsum::acc_push(a.w, r, j);
    Zsum::acc_push(a.z, r, j);
  }
  template <class T>
  static LK_INLINE void tile_acc(Acc<T>& a, const T* buf, int ld, int n) {
    Wsum::tile_acc(a.w, buf, ld, n);
    Zsum::tile_acc(a.z, buf, ld, n);
  }
  LK_HD static void init(State& st) { Wsum::init(st.w); Zsum::init(st.z); }
  template <class S>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<S>& a) {
    Wsum::acc_fold(st.w, a.w);
    Zsum::acc_fold(st.z, a.z);
  }
  LK_HD static void merge(State& st, const State& o) { acc_fold(st, o); }
  template <class T>
  LK_HD static void finalize(const State& st, T* vals, int64_t*) {
    // Both sums share the same running maximum, so their ratio needs no rescaling. A NaN
    // term gives NaN sums, a +inf term NaN as in torch.softmax (inf - inf).
    const bool undefined = st.z.m[0] == inf<double>();
    for (int e = 0; e < E; ++e) vals[e] = undefined ? nan<T>() : T(st.w.s[e] / st.z.s[0]);
  }
};

// ---------------------------------------------------------------- Min, Max, ArgMin, ...
// Componentwise extremum and its first index; ties keep the smallest j; the first NaN
// beats every number. Comparisons are exact in T: no per-tile accumulator.
template <int D, int IS_MAX, int WANT_VALS, int WANT_IDX>
struct ArgExtremumRed {
  static constexpr int VALS = D * WANT_VALS, IDXS = D * WANT_IDX;
  static constexpr bool ACC_PER_TILE = false;
  template <class T> struct Acc { T v[D]; int64_t i[D]; };
  using State = Acc<double>;
  LK_HD static LK_INLINE bool better(double a, double b) { return IS_MAX ? a > b : a < b; }
  // A new term r replaces the current best v (an earlier term): the unordered comparison
  // (true for r better, or either one NaN) is the one the loop made before NaN handling;
  // v == v then keeps the first NaN.
  template <class A, class B>
  LK_HD static LK_INLINE bool replaces(A r, B v) {
    return !(IS_MAX ? r <= v : r >= v) && v == v;
  }
  // Partial result (va, ia) beats (vb, ib) from another range; index -1 is a range with
  // no term (first_index), which loses to any other.
  LK_HD static LK_INLINE bool wins(double va, int64_t ia, double vb, int64_t ib) {
    if (ia < 0 || ib < 0) return ib < 0 && ia >= 0;
    if (is_nan(va) || is_nan(vb)) return is_nan(va) && (!is_nan(vb) || ia < ib);
    return better(va, vb) || (va == vb && ia < ib);
  }
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    for (int k = 0; k < D; ++k) { a.v[k] = IS_MAX ? -inf<T>() : inf<T>(); a.i[k] = 0; }
  }
  template <class T, class Row>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const Row& r, int64_t j) {
    for (int k = 0; k < D; ++k)
      if (replaces(r[k], a.v[k])) { a.v[k] = r[k]; a.i[k] = j; }
  }
  // The index reported while no term has beaten the initial value (every term +inf for
  // Min): the first term of the row's range, since ties keep the smallest j (0 unless
  // set); -1 for a range with no term (a block-sparse row outside every block).
  template <class T>
  LK_HD static LK_INLINE void first_index(Acc<T>& a, int64_t j) {
    for (int k = 0; k < D; ++k) a.i[k] = j;
  }
  LK_HD static void init(State& st) { acc_init(st); }
  template <class S>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<S>& a) {
    for (int k = 0; k < D; ++k)
      if (wins(a.v[k], a.i[k], st.v[k], st.i[k])) { st.v[k] = a.v[k]; st.i[k] = a.i[k]; }
  }
  LK_HD static void merge(State& st, const State& o) { acc_fold(st, o); }
  template <class T>
  LK_HD static void finalize(const State& st, T* vals, int64_t* idx) {
    for (int k = 0; k < D; ++k) {
      if (WANT_VALS) vals[k] = T(st.v[k]);
      if (WANT_IDX) idx[k] = st.i[k];
    }
  }
};

// ---------------------------------------------------------------- KMin, ArgKMin, ...
// The K smallest values of each component, sorted ascending, with their indices; output
// component d of the k-th smallest at k * D + d. Slots hold numbers first, then NaN terms
// (as torch.topk orders them), then empty slots (+inf, -1): a NaN term j is kept with the
// index -2 - j and the largest finite value, so that the per-term test stays one
// comparison with the last slot, and the insertion one `<` per slot. (A +inf term never
// enters: a row of fewer than K terms below +inf ends in (+inf, -1).) No per-tile
// accumulator: the lists stay in the State (CPU) or in registers (GPU: every index into
// them is a constant of an unrolled loop).
template <int D, int K, int WANT_VALS, int WANT_IDX>
struct KMinRed {
  static constexpr int VALS = D * K * WANT_VALS, IDXS = D * K * WANT_IDX;
  static constexpr bool ACC_PER_TILE = false;
  static constexpr int64_t EMPTY = -1;
  LK_HD static LK_INLINE int64_t nan_code(int64_t j) { return -2 - j; }  // and back
  template <class T> struct Acc { T v[D][K]; int64_t i[D][K]; };
  using State = Acc<double>;
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    for (int d = 0; d < D; ++d)
      for (int k = 0; k < K; ++k) { a.v[d][k] = inf<T>(); a.i[d][k] = EMPTY; }
  }
  template <class T>
  LK_HD static LK_INLINE void swap_slot(Acc<T>& a, int d, int k, T& cv, int64_t& ci) {
    T tv = a.v[d][k]; a.v[d][k] = cv; cv = tv;
    int64_t ti = a.i[d][k]; a.i[d][k] = ci; ci = ti;
  }
  // Slot (cv, ci) enters component d's list after the slots that come before it (equal
  // values of smaller index, NaN terms of smaller index) and shifts the rest: at slot k,
  // once a slot holding more was met, the two swap.
  template <class T>
  LK_HD static LK_INLINE void shift(Acc<T>& a, int d, int k, T& cv, int64_t& ci,
                                    bool& shifting) {
    shifting = shifting || cv < a.v[d][k];
    if (shifting) swap_slot(a, d, k, cv, ci);
  }
  template <class T>
  LK_HD static LK_INLINE void enter(Acc<T>& a, int d, T cv, int64_t ci) {
    bool shifting = false;
    LK_UNROLL for (int k = 0; k < K; ++k) shift(a, d, k, cv, ci, shifting);
  }
  // Whether slot (cv, ci) goes before slot (v, i): a smaller value, or the same and an
  // earlier term (numbers before NaN terms, each in order of j).
  LK_HD static LK_INLINE bool precedes(double cv, int64_t ci, double v, int64_t i) {
    if (i == EMPTY) return true;
    if (cv != v) return cv < v;
    const bool cnan = ci < EMPTY, nan = i < EMPTY;
    if (cnan != nan) return nan;
    return cnan ? ci > i : ci < i;
  }
  // The insertion of folds, by `precedes`: lists folded out of the order of j (the lanes of
  // a tensor-core row, lk_cuda_mma.cuh) still order equal values by index. Not unrolled
  // (once per GPU thread, or per split): the State is then indexed at run time and stays
  // in local memory, out of the registers the term loop needs. (Unrolled, the fold held
  // both lists in registers: 88 instead of 64 for ArgKMin K = 10 on sm_90, half the
  // occupancy and 1.3x the time.)
  LK_HD static void enter_looped(State& st, int d, double cv, int64_t ci) {
    bool shifting = false;
    LK_NO_UNROLL for (int k = 0; k < K; ++k) {
      shifting = shifting || precedes(cv, ci, st.v[d][k], st.i[d][k]);
      if (shifting) swap_slot(st, d, k, cv, ci);
    }
  }
  template <class T, class Row>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const Row& r, int64_t j) {
    LK_UNROLL for (int d = 0; d < D; ++d) {
      const T v = r[d];
      if (v >= a.v[d][K - 1]) continue;  // false for NaN: it enters as the largest
      // number there is, after the numbers and the earlier NaN, before the empty slots.
      const bool number = v == v;
      enter(a, d, number ? v : largest<T>(), number ? j : nan_code(j));
    }
  }
  LK_HD static void init(State& st) { acc_init(st); }
  // Another list's slots in order, each placed by value then index (`precedes`).
  template <class S>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<S>& a) {
    for (int d = 0; d < D; ++d)
      for (int k = 0; k < K && a.i[d][k] != EMPTY; ++k) {
        const double v = a.i[d][k] >= 0 ? double(a.v[d][k]) : largest<double>();
        if (precedes(v, a.i[d][k], st.v[d][K - 1], st.i[d][K - 1]))
          enter_looped(st, d, v, a.i[d][k]);
      }
  }
  LK_HD static void merge(State& st, const State& o) { acc_fold(st, o); }
  template <class T>
  LK_HD static void finalize(const State& st, T* vals, int64_t* idx) {
    for (int k = 0; k < K; ++k)
      for (int d = 0; d < D; ++d) {
        const int64_t i = st.i[d][k];
        if (WANT_VALS) vals[k * D + d] = i < EMPTY ? nan<T>() : T(st.v[d][k]);
        if (WANT_IDX) idx[k * D + d] = i < EMPTY ? nan_code(i) : i;
      }
  }
};

// first_index for the policies that have one (the extrema), nothing for the others: an
// engine calls it on a row's State and Acc once it knows the first term of its range.
template <class R, class = void>
struct HasFirstIndex : std::false_type {};
template <class R>
struct HasFirstIndex<R, std::void_t<decltype(&R::template first_index<double>)>>
    : std::true_type {};
template <class R, class A>
LK_HD LK_INLINE void start_at(A& a, int64_t j) {
  if constexpr (HasFirstIndex<R>::value) R::first_index(a, j);
}

}  // namespace lk
