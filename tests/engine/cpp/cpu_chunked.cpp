// cpu_chunked.cpp: the CPU engine's chunked path (formulas defining WIDE: chunk_full /
// chunk_tail, `eval` reading part<m>(), output_full / output_tail reading scalar<s>(),
// wvar / pvar / chunk_start) and DualSum's column sums (one span and two spans, 1 and 2
// threads), against naive loops. Wide variables of 70 components: two full chunks of
// CHUNK = 32 and a tail of 6.
#define LK_HARNESS_CPU
#include "harness.h"

namespace {

constexpr int D = 70;
static_assert(D % lk::CHUNK != 0 && D > 2 * lk::CHUNK, "two chunks and a tail");

// Exp(-SqDist(x, y) / 100) * Scalprod(x * p, y): x = Vi(70), p = Pm(70), y = Vj(70).
// Chunked sums: part<0> = SqDist, part<1> = sum_k x_k p_k y_k.
struct WideScalprod {
  static constexpr int NARGS = 3;
  static constexpr int CAT[3] = {0, 2, 1};
  static constexpr int DIM[3] = {D, D, D};
  static constexpr int DIMOUT = 1;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    T v0[1];
    v0[0] = lk::exp(-(in.template part<0>() * T(0.01)));
    out[0] = v0[0] * in.template part<1>();
  }
  static constexpr int WIDE = D;
  static constexpr int NCHUNKED = 2;
  template <int L, class T, class In, class Part>
  LK_HD static LK_INLINE void chunk(const In& in, Part part) {
    T s0 = T(0), s1 = T(0);
    LK_UNROLL for (int k = 0; k < L; ++k) {
      const T d = in.template wvar<0>(k) - in.template wvar<2>(k);
      s0 += d * d;
      s1 += in.template wvar<0>(k) * in.template pvar<1>(k) * in.template wvar<2>(k);
    }
    part[0] += s0;
    part[1] += s1;
  }
  template <class T, class In, class Part>
  LK_HD static LK_INLINE void chunk_full(const In& in, Part part) { chunk<lk::CHUNK, T>(in, part); }
  template <class T, class In, class Part>
  LK_HD static LK_INLINE void chunk_tail(const In& in, Part part) { chunk<D % lk::CHUNK, T>(in, part); }
};

// Exp(-SqDist(x, y) / 100) * (x - y) * c: x = Vi(70), y = Vj(70), c = Vj(1); the output
// componentwise in the wide variables, chunk by chunk, from scalar<0> (the exp times c)
// that `eval` leaves past DIMOUT.
struct WideGradient {
  static constexpr int NARGS = 3;
  static constexpr int CAT[3] = {0, 1, 1};
  static constexpr int DIM[3] = {D, D, 1};
  static constexpr int DIMOUT = D;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    out[D] = lk::exp(-(in.template part<0>() * T(0.01))) * in.template var<2>(0);
  }
  static constexpr int WIDE = D;
  static constexpr int NCHUNKED = 1;
  template <int L, class T, class In, class Part>
  LK_HD static LK_INLINE void chunk(const In& in, Part part) {
    T s = T(0);
    LK_UNROLL for (int k = 0; k < L; ++k) {
      const T d = in.template wvar<0>(k) - in.template wvar<1>(k);
      s += d * d;
    }
    part[0] += s;
  }
  template <class T, class In, class Part>
  LK_HD static LK_INLINE void chunk_full(const In& in, Part part) { chunk<lk::CHUNK, T>(in, part); }
  template <class T, class In, class Part>
  LK_HD static LK_INLINE void chunk_tail(const In& in, Part part) { chunk<D % lk::CHUNK, T>(in, part); }
  static constexpr int NSCALARS = 1;
  template <int L, class T, class In, class Out>
  LK_HD static LK_INLINE void output(const In& in, Out out) {
    LK_UNROLL for (int k = 0; k < L; ++k)
      out[0 + in.chunk_start() + k] = in.template scalar<0>() * (in.template wvar<0>(k) - in.template wvar<1>(k));
  }
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void output_full(const In& in, Out out) { output<lk::CHUNK, T>(in, out); }
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void output_tail(const In& in, Out out) { output<D % lk::CHUNK, T>(in, out); }
};

// DualSum formulas over x = Vi(3), y = Vj(3): k_ij = Exp(-SqDist(x, y)).
// Rows then columns: k_ij (x_i - y_j) (summed over j), k_ij x_i (summed over i).
struct DualRowsCols {
  static constexpr int NARGS = 2;
  static constexpr int CAT[2] = {0, 1};
  static constexpr int DIM[2] = {3, 3};
  static constexpr int DIMOUT = 6;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    T d2 = T(0);
    LK_UNROLL for (int k = 0; k < 3; ++k)
      d2 += (in.template var<0>(k) - in.template var<1>(k)) * (in.template var<0>(k) - in.template var<1>(k));
    const T e = lk::exp(-d2);
    LK_UNROLL for (int k = 0; k < 3; ++k) out[k] = e * (in.template var<0>(k) - in.template var<1>(k));
    LK_UNROLL for (int k = 0; k < 3; ++k) out[3 + k] = e * in.template var<0>(k);
  }
};

// Only the rows, k_ij (x_i - y_j): DualSumRed<3, 3, 0, -1> takes the columns as their
// negation, sum_i k_ij (y_j - x_i).
struct DualNegated {
  static constexpr int NARGS = 2;
  static constexpr int CAT[2] = {0, 1};
  static constexpr int DIM[2] = {3, 3};
  static constexpr int DIMOUT = 3;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    T d2 = T(0);
    LK_UNROLL for (int k = 0; k < 3; ++k)
      d2 += (in.template var<0>(k) - in.template var<1>(k)) * (in.template var<0>(k) - in.template var<1>(k));
    const T e = lk::exp(-d2);
    LK_UNROLL for (int k = 0; k < 3; ++k) out[k] = e * (in.template var<0>(k) - in.template var<1>(k));
  }
};

constexpr int64_t N = 37, M = 1001;
harness::Report report;

void wide_scalprod() {
  harness::Case c("chunked_sums_wvar_pvar");
  harness::Rng rng(11);
  const auto x = harness::uniform<double>(rng, N * D, -0.5, 0.5);
  const auto p = harness::uniform<double>(rng, D, -1, 1);
  const auto y = harness::uniform<double>(rng, M * D, -0.5, 0.5);
  std::vector<double> got(N, -1);
  int rc = harness::run_cpu<WideScalprod, lk::SumRed<1, lk::BlockSum>, double>(
      1, N, M, {x.data(), p.data(), y.data()}, {0, 0, 0}, got.data(), nullptr, nullptr, 1);
  c.equal("status", 0, rc, 0);
  for (int64_t i = 0; i < N; ++i) {
    double want = 0, scale = 0;
    for (int64_t j = 0; j < M; ++j) {
      double d2 = 0, sp = 0;
      for (int k = 0; k < D; ++k) {
        d2 += (x[i * D + k] - y[j * D + k]) * (x[i * D + k] - y[j * D + k]);
        sp += x[i * D + k] * p[k] * y[j * D + k];
      }
      want += std::exp(-d2 / 100) * sp;
      scale += std::fabs(std::exp(-d2 / 100) * sp);
    }
    // Terms of both signs: the tolerance is relative to the sum of their magnitudes.
    c.close("out", i, got[i], want, 0, 1e-12 * scale);
  }
  report.add(c);
}

void wide_gradient() {
  harness::Case c("chunked_outputs_scalar_chunk_start");
  harness::Rng rng(12);
  const auto x = harness::uniform<double>(rng, N * D, -0.5, 0.5);
  const auto y = harness::uniform<double>(rng, M * D, -0.5, 0.5);
  const auto cj = harness::uniform<double>(rng, M, 0.5, 1.5);
  std::vector<double> got(N * D, -1);
  int rc = harness::run_cpu<WideGradient, lk::SumRed<D, lk::BlockSum>, double>(
      1, N, M, {x.data(), y.data(), cj.data()}, {0, 0, 0}, got.data(), nullptr, nullptr, 1);
  c.equal("status", 0, rc, 0);
  for (int64_t i = 0; i < N; ++i) {
    std::vector<double> want(D, 0), scale(D, 0);
    for (int64_t j = 0; j < M; ++j) {
      double d2 = 0;
      for (int k = 0; k < D; ++k) d2 += (x[i * D + k] - y[j * D + k]) * (x[i * D + k] - y[j * D + k]);
      const double e = std::exp(-d2 / 100) * cj[j];
      for (int k = 0; k < D; ++k) {
        want[k] += e * (x[i * D + k] - y[j * D + k]);
        scale[k] += std::fabs(e * (x[i * D + k] - y[j * D + k]));
      }
    }
    for (int k = 0; k < D; ++k) c.close("out", i * D + k, got[i * D + k], want[k], 0, 1e-12 * scale[k]);
  }
  report.add(c);
}

// rows[i] = sum_j k_ij (x_i - y_j); cols[j] = sum_i (negated ? k_ij (y_j - x_i) : k_ij x_i).
template <class F, class R>
void dualsum(const char* name, int64_t n, int64_t m, int nthreads, bool negated) {
  harness::Case c(name);
  harness::Rng rng(13);
  const auto x = harness::uniform<double>(rng, n * 3, -1, 1);
  const auto y = harness::uniform<double>(rng, m * 3, -1, 1);
  std::vector<double> rows(n * 3, -1), cols(m * 3, -1);
  int rc = harness::run_cpu<F, R, double>(1, n, m, {x.data(), y.data()}, {0, 0}, rows.data(),
                                          nullptr, cols.data(), nthreads);
  c.equal("status", 0, rc, 0);
  std::vector<double> want_rows(n * 3, 0), want_cols(m * 3, 0), scale_rows(n * 3, 0),
      scale_cols(m * 3, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      double d2 = 0;
      for (int k = 0; k < 3; ++k) d2 += (x[i * 3 + k] - y[j * 3 + k]) * (x[i * 3 + k] - y[j * 3 + k]);
      const double e = std::exp(-d2);
      for (int k = 0; k < 3; ++k) {
        const double r = e * (x[i * 3 + k] - y[j * 3 + k]);
        const double col = negated ? -r : e * x[i * 3 + k];
        want_rows[i * 3 + k] += r;
        scale_rows[i * 3 + k] += std::fabs(r);
        want_cols[j * 3 + k] += col;
        scale_cols[j * 3 + k] += std::fabs(col);
      }
    }
  for (int64_t a = 0; a < n * 3; ++a) c.close("rows", a, rows[a], want_rows[a], 0, 1e-12 * scale_rows[a]);
  for (int64_t a = 0; a < m * 3; ++a) c.close("cols", a, cols[a], want_cols[a], 0, 1e-12 * scale_cols[a]);
  report.add(c);
}

}  // namespace

int main() {
  wide_scalprod();
  wide_gradient();
  using Cols = lk::DualSumRed<3, 3>;
  using Neg = lk::DualSumRed<3, 3, 0, -1>;
  dualsum<DualRowsCols, Cols>("dualsum_columns_1_thread", N, M, 1, false);
  dualsum<DualNegated, Neg>("dualsum_negated_2_threads", N, M, 2, true);
  // More terms than one span of column partials holds: States kept across spans.
  constexpr int64_t span = lk::column_span<DualRowsCols, 3>();
  dualsum<DualRowsCols, Cols>("dualsum_two_spans_2_threads", 21, span + 2001, 2, false);
  return report.exit_code();
}
