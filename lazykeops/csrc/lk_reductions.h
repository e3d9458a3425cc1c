// lk_reductions.h: reduction policies shared by the engines.
//
// A policy reduces the formula values of one output row over the reduced index.
//   VALS, IDXS          widths of the value output (type T) and index output (int64)
//   State               the running partial result of one row
//   init(State&)
//   tile(State&, buf, ld, n, j0)
//                       fold n consecutive terms j0 .. j0+n-1; component k of term j
//                       is buf[k * ld + j]; inner loops are written so that they vectorise
//   merge(State&, const State&)
//                       combine two partial results over disjoint ranges (split schemes)
//   finalize(const State&, T* vals, int64_t* idx)
// and, for the CUDA engine, an accumulator in the compute type T, kept in registers:
//   Acc<T>, acc_init(Acc&), acc_push(Acc&, r, j), acc_fold(State&, const Acc&)
//   ACC_PER_TILE        true: the engine folds the accumulator into the State after each
//                       tile and starts a new one (sums: T within a tile, double across);
//                       false: one accumulator spans the whole range (exact selections)
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

#include <cstdint>
#include <limits>
#include <type_traits>

#include "lk_math.h"

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

// ---------------------------------------------------------------- Sum
struct BlockSum {};   // tile partials in T, carried in double (default)
struct KahanSum {};   // tile partials in T, carried in T with Kahan compensation
struct DirectSum {};  // tile partials in T, carried in T

template <int D, class Scheme>
struct SumRed {
  static constexpr int VALS = D, IDXS = 0;
  struct State { double s[D]; double c[D]; };
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
  static void tile(State& st, const T* buf, int ld, int n, int64_t) {
    for (int k = 0; k < D; ++k) {
      const T* row = buf + (int64_t)k * ld;
      T part = 0;
#pragma omp simd reduction(+ : part)
      for (int j = 0; j < n; ++j) part += row[j];
      add(st, k, part);
    }
  }
  static constexpr bool ACC_PER_TILE = true;
  template <class T> struct Acc { T s[D]; };
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    for (int k = 0; k < D; ++k) a.s[k] = T(0);
  }
  template <class T>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const T* r, int64_t) {
    for (int k = 0; k < D; ++k) a.s[k] += r[k];
  }
  template <class T>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<T>& a) {
    for (int k = 0; k < D; ++k) add(st, k, a.s[k]);
  }
  LK_HD static void merge(State& st, const State& o) {
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
// component 0 of the buffer and the E weights follow it.
template <int D, int E>
struct LogSumExpRed {
  static constexpr int W = E == 0 ? D : E;  // number of (m, s) accumulators per max
  static constexpr int NM = E == 0 ? D : 1; // number of maxima
  static constexpr int VALS = W, IDXS = 0;
  struct State { double m[NM]; double s[W]; };
  LK_HD static void init(State& st) {
    for (int k = 0; k < NM; ++k) st.m[k] = -inf<double>();
    for (int k = 0; k < W; ++k) st.s[k] = 0;
  }
  // Fold (tm, ts[]) into (m, s[]) for the accumulators [k0, k0 + cnt) that share max slot a.
  // m = +inf marks a row with a +inf term (the result, whatever else comes: two +inf terms
  // in one accumulator make its sum NaN); m = NaN a row whose terms were all NaN or -inf
  // in some tile. Otherwise a NaN term, or a NaN weight, makes the sums it enters NaN by
  // plain arithmetic, and they stay NaN.
  LK_HD static void fold(State& st, int a, double tm, const double* ts, int k0, int cnt) {
    if (st.m[a] == inf<double>()) return;
    if (tm == inf<double>()) { st.m[a] = inf<double>(); return; }
    if (is_nan(st.m[a]) || is_nan(tm)) { st.m[a] = nan<double>(); return; }
    if (tm == -inf<double>()) return;
    if (tm > st.m[a]) {
      double scale = lk::exp(st.m[a] - tm);
      for (int k = 0; k < cnt; ++k) st.s[k0 + k] = st.s[k0 + k] * scale + ts[k];
      st.m[a] = tm;
    } else {
      double scale = lk::exp(tm - st.m[a]);
      for (int k = 0; k < cnt; ++k) st.s[k0 + k] += ts[k] * scale;
    }
  }
  template <class T>
  static void tile(State& st, const T* buf, int ld, int n, int64_t) {
    for (int a = 0; a < NM; ++a) {
      const T* f = buf + (int64_t)a * ld;
      T tm = -inf<T>();
#pragma omp simd reduction(max : tm)
      for (int j = 0; j < n; ++j) tm = f[j] > tm ? f[j] : tm;
      if (tm == inf<T>()) { st.m[a] = inf<double>(); continue; }
      if (tm == -inf<T>()) {
        // The maximum skips NaN terms (a finite one lets them through exp, below).
        bool met_nan = false;
        for (int j = 0; j < n; ++j) met_nan = met_nan || is_nan(f[j]);
        if (met_nan && st.m[a] != inf<double>()) st.m[a] = nan<double>();
        continue;
      }
      if constexpr (E == 0) {
        T part = 0;
#pragma omp simd reduction(+ : part)
        for (int j = 0; j < n; ++j) part += lk::exp(f[j] - tm);
        double ts = part;
        fold(st, a, tm, &ts, a, 1);
      } else {
        double ts[E];
        for (int e = 0; e < E; ++e) {
          const T* w = buf + (int64_t)(1 + e) * ld;
          T part = 0;
#pragma omp simd reduction(+ : part)
          for (int j = 0; j < n; ++j) part += lk::exp(f[j] - tm) * w[j];
          ts[e] = part;
        }
        fold(st, 0, tm, ts, 0, E);
      }
    }
  }
  // The accumulator starts from the lowest finite value rather than -inf: s = 0 keeps it
  // neutral, and -inf terms then give exp(-inf - m) = 0 with no special case. One exp per
  // term: the smaller of (f, m) is rescaled to the larger.
  static constexpr bool ACC_PER_TILE = true;
  template <class T> struct Acc { T m[NM]; T s[W]; };
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    for (int k = 0; k < NM; ++k) a.m[k] = -std::numeric_limits<T>::max();
    for (int k = 0; k < W; ++k) a.s[k] = T(0);
  }
  template <class T>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const T* r, int64_t) {
    for (int g = 0; g < NM; ++g) {
      const T f = r[g];
      const bool up = f > a.m[g];  // false for NaN f: then the scale below is NaN
      const T scale = lk::exp(up ? a.m[g] - f : f - a.m[g]);
      for (int k = E == 0 ? g : 0; k < (E == 0 ? g + 1 : W); ++k) {
        const T w = E == 0 ? T(1) : r[1 + k];
        a.s[k] = up ? a.s[k] * scale + w : a.s[k] + scale * w;
      }
      a.m[g] = up ? f : a.m[g];
    }
  }
  template <class T>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<T>& a) {
    for (int g = 0; g < NM; ++g) {
      if (a.m[g] == inf<T>()) { st.m[g] = inf<double>(); continue; }  // s may be NaN
      double ts[W];
      const int k0 = E == 0 ? g : 0, cnt = E == 0 ? 1 : W;
      for (int k = 0; k < cnt; ++k) ts[k] = a.s[k0 + k];
      fold(st, g, double(a.m[g]), ts, k0, cnt);
    }
  }
  LK_HD static void merge(State& st, const State& o) {
    for (int a = 0; a < NM; ++a) {
      if (E == 0) fold(st, a, o.m[a], o.s + a, a, 1);
      else fold(st, 0, o.m[0], o.s, 0, W);
    }
  }
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
  using Inner = LogSumExpRed<1, E>;
  static constexpr int VALS = E, IDXS = 0;
  struct State { typename Inner::State w; typename LogSumExpRed<1, 0>::State z; };
  LK_HD static void init(State& st) { Inner::init(st.w); LogSumExpRed<1, 0>::init(st.z); }
  template <class T>
  static void tile(State& st, const T* buf, int ld, int n, int64_t j0) {
    Inner::tile(st.w, buf, ld, n, j0);
    LogSumExpRed<1, 0>::tile(st.z, buf, ld, n, j0);
  }
  static constexpr bool ACC_PER_TILE = true;
  template <class T>
  struct Acc { typename Inner::template Acc<T> w; typename LogSumExpRed<1, 0>::template Acc<T> z; };
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    Inner::acc_init(a.w);
    LogSumExpRed<1, 0>::acc_init(a.z);
  }
  template <class T>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const T* r, int64_t j) {
    Inner::acc_push(a.w, r, j);
    LogSumExpRed<1, 0>::acc_push(a.z, r, j);
  }
  template <class T>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<T>& a) {
    Inner::acc_fold(st.w, a.w);
    LogSumExpRed<1, 0>::acc_fold(st.z, a.z);
  }
  LK_HD static void merge(State& st, const State& o) {
    Inner::merge(st.w, o.w);
    LogSumExpRed<1, 0>::merge(st.z, o.z);
  }
  template <class T>
  LK_HD static void finalize(const State& st, T* vals, int64_t*) {
    // Both sums share the same running maximum, so their ratio needs no rescaling. A NaN
    // or +inf term gives NaN, as torch.softmax (inf - inf).
    const bool undefined = is_nan(st.z.m[0]) || is_nan(st.w.m[0]) || st.z.m[0] == inf<double>();
    for (int e = 0; e < E; ++e) vals[e] = undefined ? nan<T>() : T(st.w.s[e] / st.z.s[0]);
  }
};

// ---------------------------------------------------------------- Min, Max, ArgMin, ...
// Componentwise extremum and its first index; ties keep the smallest j; the first NaN
// beats every number.
template <int D, int IS_MAX, int WANT_VALS, int WANT_IDX>
struct ArgExtremumRed {
  static constexpr int VALS = D * WANT_VALS, IDXS = D * WANT_IDX;
  struct State { double v[D]; int64_t i[D]; };
  LK_HD static LK_INLINE bool better(double a, double b) { return IS_MAX ? a > b : a < b; }
  // A new term r replaces the current best v (an earlier term): the unordered comparison
  // (true for r better, or either one NaN) is the one the loop made before NaN handling;
  // v == v then keeps the first NaN.
  template <class T>
  LK_HD static LK_INLINE bool replaces(T r, T v) {
    return !(IS_MAX ? r <= v : r >= v) && v == v;
  }
  // Partial result (va, ia) beats (vb, ib) from another range.
  LK_HD static LK_INLINE bool wins(double va, int64_t ia, double vb, int64_t ib) {
    if (is_nan(va) || is_nan(vb)) return is_nan(va) && (!is_nan(vb) || ia < ib);
    return better(va, vb) || (va == vb && ia < ib);
  }
  LK_HD static void init(State& st) {
    for (int k = 0; k < D; ++k) { st.v[k] = IS_MAX ? -inf<double>() : inf<double>(); st.i[k] = 0; }
  }
  template <class T>
  static void tile(State& st, const T* buf, int ld, int n, int64_t j0) {
    for (int k = 0; k < D; ++k) {
      const T* row = buf + (int64_t)k * ld;
      T best = T(st.v[k]);
      int where = -1;
      for (int j = 0; j < n; ++j)
        if (replaces(row[j], best)) { best = row[j]; where = j; }
      if (where >= 0) { st.v[k] = best; st.i[k] = j0 + where; }
    }
  }
  // Comparisons are exact in T: the accumulator spans the whole range.
  static constexpr bool ACC_PER_TILE = false;
  template <class T> struct Acc { T v[D]; int64_t i[D]; };
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    for (int k = 0; k < D; ++k) { a.v[k] = IS_MAX ? -inf<T>() : inf<T>(); a.i[k] = 0; }
  }
  template <class T>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const T* r, int64_t j) {
    for (int k = 0; k < D; ++k)
      if (replaces(r[k], a.v[k])) { a.v[k] = r[k]; a.i[k] = j; }
  }
  template <class T>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<T>& a) {
    for (int k = 0; k < D; ++k)
      if (wins(a.v[k], a.i[k], st.v[k], st.i[k])) { st.v[k] = a.v[k]; st.i[k] = a.i[k]; }
  }
  LK_HD static void merge(State& st, const State& o) {
    for (int k = 0; k < D; ++k)
      if (wins(o.v[k], o.i[k], st.v[k], st.i[k])) { st.v[k] = o.v[k]; st.i[k] = o.i[k]; }
  }
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
// index -2 - j (and, in the accumulator, the largest finite value), so that the per-term
// test stays one comparison with the last slot, and the insertion one `<` per slot.
// (A +inf term never enters: a row of fewer than K terms below +inf ends in (+inf, -1).)
template <int D, int K, int WANT_VALS, int WANT_IDX>
struct KMinRed {
  static constexpr int VALS = D * K * WANT_VALS, IDXS = D * K * WANT_IDX;
  static constexpr int64_t EMPTY = -1;
  LK_HD static LK_INLINE int64_t nan_code(int64_t j) { return -2 - j; }  // and back
  struct State { double v[D][K]; int64_t i[D][K]; };
  LK_HD static void init(State& st) {
    for (int d = 0; d < D; ++d)
      for (int k = 0; k < K; ++k) { st.v[d][k] = inf<double>(); st.i[d][k] = EMPTY; }
  }
  // NaN term j: after the numbers and the NaN terms of smaller index, before the empty
  // slots; dropped when none is left.
  LK_HD static LK_INLINE void place_nan(State& st, int d, int64_t j) {
    int64_t* i = st.i[d];
    int p = 0;
    while (p < K && (i[p] >= 0 || (i[p] < EMPTY && nan_code(i[p]) < j))) ++p;
    if (p == K) return;
    for (int q = K - 1; q > p; --q) { st.v[d][q] = st.v[d][q - 1]; i[q] = i[q - 1]; }
    st.v[d][p] = inf<double>(); i[p] = nan_code(j);
  }
  // Insert after any equal value, so that ties keep the smaller index first.
  LK_HD static LK_INLINE void insert(State& st, int d, double v, int64_t j) {
    if (v >= st.v[d][K - 1]) return;
    if (is_nan(v)) { place_nan(st, d, j); return; }
    int p = K - 1;
    while (p > 0 && v < st.v[d][p - 1]) {
      st.v[d][p] = st.v[d][p - 1]; st.i[d][p] = st.i[d][p - 1]; --p;
    }
    st.v[d][p] = v; st.i[d][p] = j;
  }
  // A slot of another state, inserted into st (NaN terms as NaN again).
  template <class V>
  LK_HD static LK_INLINE void insert_slot(State& st, int d, V v, int64_t i) {
    if (i < EMPTY) insert(st, d, nan<double>(), nan_code(i));
    else insert(st, d, v, i);
  }
  template <class T>
  static void tile(State& st, const T* buf, int ld, int n, int64_t j0) {
    for (int d = 0; d < D; ++d) {
      const T* row = buf + (int64_t)d * ld;
      for (int j = 0; j < n; ++j) insert(st, d, row[j], j0 + j);
    }
  }
  // The accumulator's lists stay in registers: every index into them is a constant of an
  // unrolled loop. A new value enters after the values equal to it and shifts the rest.
  static constexpr bool ACC_PER_TILE = false;
  template <class T> struct Acc { T v[D][K]; int64_t i[D][K]; };
  template <class T>
  LK_HD static LK_INLINE void acc_init(Acc<T>& a) {
    for (int d = 0; d < D; ++d)
      for (int k = 0; k < K; ++k) { a.v[d][k] = inf<T>(); a.i[d][k] = EMPTY; }
  }
  template <class T>
  LK_HD static LK_INLINE void acc_push(Acc<T>& a, const T* r, int64_t j) {
    LK_UNROLL for (int d = 0; d < D; ++d) {
      if (r[d] >= a.v[d][K - 1]) continue;  // false for NaN: it enters as the largest
      // number there is, after the numbers and the earlier NaN, before the empty slots
      // (+inf): the insertion below needs no test of its own.
      const bool number = r[d] == r[d];
      T cv = number ? r[d] : largest<T>();
      int64_t ci = number ? j : nan_code(j);
      bool shifting = false;
      LK_UNROLL for (int k = 0; k < K; ++k) {
        shifting = shifting || cv < a.v[d][k];
        if (shifting) {
          T tv = a.v[d][k]; a.v[d][k] = cv; cv = tv;
          int64_t ti = a.i[d][k]; a.i[d][k] = ci; ci = ti;
        }
      }
    }
  }
  template <class T>
  LK_HD static LK_INLINE void acc_fold(State& st, const Acc<T>& a) {
    for (int d = 0; d < D; ++d)
      for (int k = 0; k < K && a.i[d][k] != EMPTY; ++k) insert_slot(st, d, a.v[d][k], a.i[d][k]);
  }
  LK_HD static void merge(State& st, const State& o) {
    for (int d = 0; d < D; ++d)
      for (int k = 0; k < K && o.i[d][k] != EMPTY; ++k) insert_slot(st, d, o.v[d][k], o.i[d][k]);
  }
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

}  // namespace lk
