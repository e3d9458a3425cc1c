// cpu_engine.cpp: lk::cpu_run (lk_cpu_engine.h) on hand-written formulas, in the shape
// lazykeops/compile/codegen.py renders them, against naive loops: Sum of a Gaussian kernel
// (float64 and float32), a batch with broadcast arguments, 1 and 2 threads, Min_ArgMin /
// Max_ArgMax / ArgMin with ties, LogSumExp beyond exp's range (plain and weighted), KMin
// with K = 3 (ties, fewer terms than K, no term).
//
// Sizes are not multiples of the tile (16 to 512 terms), of the row block (16) or of a
// SIMD width: N = 37, M = 1001.
#define LK_HARNESS_CPU
#include "harness.h"

#include <atomic>
#include <cstring>

namespace {

// ---------------------------------------------------------------- formulas
// Exp(-g SqDist(x_i, y_j)) * b_j: x = Vi(3), y = Vj(3), g = Pm(1), b = Vj(2).
struct Gaussian {
  static constexpr int NARGS = 4;
  static constexpr int CAT[4] = {0, 1, 2, 1};
  static constexpr int DIM[4] = {3, 3, 1, 2};
  static constexpr int DIMOUT = 2;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    T v0[1];  // SqDist
    {
      T s = T(0);
      LK_UNROLL for (int k = 0; k < 3; ++k) {
        s += (in.template var<0>(k) - in.template var<1>(k)) * (in.template var<0>(k) - in.template var<1>(k));
      }
      v0[0] = s;
    }
    T v1[1];  // Exp(-g d2)
    v1[0] = lk::exp(-(v0[0] * in.template var<2>(0)));
    LK_UNROLL for (int k = 0; k < 2; ++k) out[0 + k] = v1[0] * in.template var<3>(k);
  }
};

// The largest OpenMP team any evaluation ran in: shows whether cpu_run went parallel.
std::atomic<int> g_team{0};

template <class F>
struct TeamSpy : F {
  template <class T, class In, class Out>
  static void eval(const In& in, Out out) {
    F::template eval<T>(in, out);
    const int t = omp_get_num_threads();
    int seen = g_team.load(std::memory_order_relaxed);
    while (t > seen && !g_team.compare_exchange_weak(seen, t)) {}
  }
};

// Two components with many ties: (x_i - y_j0)^2 and |x_i - y_j1|, x = Vi(1), y = Vj(2).
struct Distances {
  static constexpr int NARGS = 2;
  static constexpr int CAT[2] = {0, 1};
  static constexpr int DIM[2] = {1, 2};
  static constexpr int DIMOUT = 2;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    T v0[1];
    v0[0] = in.template var<0>(0) - in.template var<1>(0);
    T v1[1];
    v1[0] = lk::abs(in.template var<0>(0) - in.template var<1>(1));
    out[0] = v0[0] * v0[0];
    out[1] = v1[0];
  }
};

// 400 <x_i, y_j> and 800 + (x_i0 - y_j0) / 2: x = Vi(2), y = Vj(2); exp of either overflows.
struct Large {
  static constexpr int NARGS = 2;
  static constexpr int CAT[2] = {0, 1};
  static constexpr int DIM[2] = {2, 2};
  static constexpr int DIMOUT = 2;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    T s = T(0);
    LK_UNROLL for (int k = 0; k < 2; ++k) s += in.template var<0>(k) * in.template var<1>(k);
    out[0] = T(400) * s;
    out[1] = T(800) + (in.template var<0>(0) - in.template var<1>(0)) * T(0.5);
  }
};

// The weighted form: f = 800 + (x_i0 - y_j0) / 2, then the weights w_j (2): x = Vi(2),
// y = Vj(2), w = Vj(2).
struct LargeWeighted {
  static constexpr int NARGS = 3;
  static constexpr int CAT[3] = {0, 1, 1};
  static constexpr int DIM[3] = {2, 2, 2};
  static constexpr int DIMOUT = 3;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    out[0] = T(800) + (in.template var<0>(0) - in.template var<1>(0)) * T(0.5);
    LK_UNROLL for (int k = 0; k < 2; ++k) out[1 + k] = in.template var<2>(k);
  }
};

constexpr int64_t N = 37, M = 1001;
harness::Report report;

// ---------------------------------------------------------------- naive references
struct GaussianData {
  int64_t nbatch, n, m;
  std::vector<double> x, y, g, b;  // per batch, unless broadcast
  int64_t sx, sy, sg, sb;          // batch strides (0: broadcast)
};

GaussianData gaussian_data(uint64_t seed, int64_t nbatch, int64_t n, int64_t m, bool broadcast) {
  harness::Rng rng(seed);
  GaussianData d{nbatch, n, m, {}, {}, {}, {}, n * 3, m * 3, 1, m * 2};
  if (broadcast) d.sy = d.sb = 0;  // y and b shared by every batch
  d.x = harness::uniform<double>(rng, nbatch * n * 3, -1, 1);
  d.y = harness::uniform<double>(rng, (broadcast ? 1 : nbatch) * m * 3, -1, 1);
  d.g = harness::uniform<double>(rng, nbatch, 0.5, 2);
  d.b = harness::uniform<double>(rng, (broadcast ? 1 : nbatch) * m * 2, 0.1, 1);
  return d;
}

std::vector<double> gaussian_naive(const GaussianData& d) {
  std::vector<double> out(d.nbatch * d.n * 2, 0.0);
  for (int64_t bt = 0; bt < d.nbatch; ++bt) {
    const double* x = d.x.data() + bt * d.sx;
    const double* y = d.y.data() + bt * d.sy;
    const double g = d.g[bt * d.sg];
    const double* b = d.b.data() + bt * d.sb;
    for (int64_t i = 0; i < d.n; ++i)
      for (int64_t j = 0; j < d.m; ++j) {
        double d2 = 0;
        for (int k = 0; k < 3; ++k) d2 += (x[i * 3 + k] - y[j * 3 + k]) * (x[i * 3 + k] - y[j * 3 + k]);
        const double e = std::exp(-g * d2);
        for (int k = 0; k < 2; ++k) out[(bt * d.n + i) * 2 + k] += e * b[j * 2 + k];
      }
  }
  return out;
}

template <class F, class T>
std::vector<T> gaussian_engine(const GaussianData& d, int nthreads) {
  auto cast = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  const std::vector<T> x = cast(d.x), y = cast(d.y), g = cast(d.g), b = cast(d.b);
  std::vector<T> out(d.nbatch * d.n * 2, T(-1));
  int rc = harness::run_cpu<F, lk::SumRed<2, lk::BlockSum>, T>(
      d.nbatch, d.n, d.m, {x.data(), y.data(), g.data(), b.data()}, {d.sx, d.sy, d.sg, d.sb},
      out.data(), nullptr, nullptr, nthreads);
  if (rc != 0) out.assign(out.size(), T(NAN));
  return out;
}

// ---------------------------------------------------------------- cases
template <class T>
void sum_gaussian(const char* name, double rtol) {
  harness::Case c(name);
  const GaussianData d = gaussian_data(1, 1, N, M, false);
  const auto want = gaussian_naive(d);
  const auto got = gaussian_engine<Gaussian, T>(d, 1);
  for (size_t k = 0; k < want.size(); ++k) c.close("out", k, got[k], want[k], rtol);
  report.add(c);
}

void batch_broadcast() {
  harness::Case c("batch_broadcast");
  // 3 batches: x and g per batch, y and b broadcast (batch stride 0).
  const GaussianData d = gaussian_data(2, 3, N, M, true);
  const auto want = gaussian_naive(d);
  const auto got = gaussian_engine<Gaussian, double>(d, 1);
  for (size_t k = 0; k < want.size(); ++k) c.close("out", k, got[k], want[k], 1e-12);
  // The batches differ (else a wrong batch offset could pass).
  c.truth("batches equal", std::fabs(want[0] - want[N * 2]) > 1e-6);
  report.add(c);
}

// Large enough for cpu_run to go parallel (nout * nred * (DIMOUT + DJ) > 200000).
void threads(int nthreads, const std::vector<double>& want, const GaussianData& d,
             std::vector<double>& got) {
  harness::Case c(nthreads == 1 ? "threads_1" : "threads_2");
  g_team = 0;
  got = gaussian_engine<TeamSpy<Gaussian>, double>(d, nthreads);
  for (size_t k = 0; k < want.size(); ++k) c.close("out", k, got[k], want[k], 1e-12);
  char what[80];
  std::snprintf(what, sizeof what, "OpenMP team of %d threads, asked %d", g_team.load(), nthreads);
  c.truth(what, g_team.load() == nthreads);
  report.add(c);
}

void threads_cases() {
  const GaussianData d = gaussian_data(3, 1, 1500, M, false);
  const auto want = gaussian_naive(d);
  std::vector<double> one, two;
  threads(1, want, d, one);
  threads(2, want, d, two);
  // Each row is reduced by one thread in the same order: the thread count changes nothing.
  harness::Case c("threads_bitwise_equal");
  for (size_t k = 0; k < one.size(); ++k)
    if (std::memcmp(&one[k], &two[k], sizeof(double)) != 0) c.close("out", k, two[k], one[k], 0);
  report.add(c);
}

// Integer values with ties everywhere; y_j0 in [5, 9] below j = 700, so that for x_i <= 4
// the smallest (x_i - y_j0)^2 first occurs in the second tile.
struct TieData {
  std::vector<double> x, y;
};

TieData tie_data(int64_t n, int64_t m) {
  harness::Rng rng(4);
  TieData d;
  for (int64_t i = 0; i < n; ++i) d.x.push_back((double)rng.integer(0, 9));
  for (int64_t j = 0; j < m; ++j) {
    d.y.push_back((double)rng.integer(j < 700 ? 5 : 0, 9));
    d.y.push_back((double)rng.integer(0, 9));
  }
  return d;
}

double distance(const TieData& d, int64_t i, int64_t j, int comp) {
  const double diff = d.x[i] - d.y[j * 2 + comp];
  return comp == 0 ? diff * diff : std::fabs(diff);
}

template <int IS_MAX, int WANT_VALS>
void extremum(const char* name) {
  harness::Case c(name);
  const TieData d = tie_data(N, M);
  std::vector<double> vals(N * 2, -1);
  std::vector<int64_t> idx(N * 2, -7);
  int rc = harness::run_cpu<Distances, lk::ArgExtremumRed<2, IS_MAX, WANT_VALS, 1>, double>(
      1, N, M, {d.x.data(), d.y.data()}, {0, 0}, WANT_VALS ? vals.data() : nullptr, idx.data(),
      nullptr, 1);
  c.equal("status", 0, rc, 0);
  int64_t late = 0;  // rows whose answer is past the first tile
  for (int64_t i = 0; i < N; ++i)
    for (int comp = 0; comp < 2; ++comp) {
      // The first j with the best value: a strict comparison keeps the earliest.
      double best = distance(d, i, 0, comp);
      int64_t where = 0;
      for (int64_t j = 1; j < M; ++j) {
        const double v = distance(d, i, j, comp);
        if (IS_MAX ? v > best : v < best) { best = v; where = j; }
      }
      late += where >= 512;
      if (WANT_VALS) c.close("vals", i * 2 + comp, vals[i * 2 + comp], best, 0);
      c.equal("idx", i * 2 + comp, idx[i * 2 + comp], where);
    }
  if (!IS_MAX) c.truth("no row answered past the first tile", late > 0);
  report.add(c);
}

double stable_lse(const std::vector<double>& f, const std::vector<double>* w = nullptr) {
  double m = -INFINITY;
  for (double v : f) m = std::fmax(m, v);
  double s = 0;
  for (size_t j = 0; j < f.size(); ++j) s += std::exp(f[j] - m) * (w ? (*w)[j] : 1.0);
  return m + std::log(s);
}

void logsumexp() {
  harness::Case c("logsumexp_overflow");
  harness::Rng rng(5);
  const auto x = harness::uniform<double>(rng, N * 2, -2, 2);
  const auto y = harness::uniform<double>(rng, M * 2, -2, 2);
  std::vector<double> got(N * 2, -1);
  int rc = harness::run_cpu<Large, lk::LogSumExpRed<2, 0>, double>(
      1, N, M, {x.data(), y.data()}, {0, 0}, got.data(), nullptr, nullptr, 1);
  c.equal("status", 0, rc, 0);
  bool overflows = false;
  for (int64_t i = 0; i < N; ++i) {
    std::vector<double> f0, f1;
    double naive = 0;
    for (int64_t j = 0; j < M; ++j) {
      f0.push_back(400 * (x[i * 2] * y[j * 2] + x[i * 2 + 1] * y[j * 2 + 1]));
      f1.push_back(800 + (x[i * 2] - y[j * 2]) * 0.5);
      naive += std::exp(f1.back());
    }
    overflows = overflows || std::isinf(naive);
    c.close("lse0", i * 2, got[i * 2], stable_lse(f0), 1e-12);
    c.close("lse1", i * 2 + 1, got[i * 2 + 1], stable_lse(f1), 1e-12);
  }
  c.truth("the naive exp-sum does not overflow", overflows);
  report.add(c);

  harness::Case cw("logsumexp_weighted_overflow");
  const auto w = harness::uniform<double>(rng, M * 2, 0.1, 3);
  std::vector<double> gw(N * 2, -1);
  rc = harness::run_cpu<LargeWeighted, lk::LogSumExpRed<1, 2>, double>(
      1, N, M, {x.data(), y.data(), w.data()}, {0, 0, 0}, gw.data(), nullptr, nullptr, 1);
  cw.equal("status", 0, rc, 0);
  for (int64_t i = 0; i < N; ++i) {
    std::vector<double> f, w0, w1;
    for (int64_t j = 0; j < M; ++j) {
      f.push_back(800 + (x[i * 2] - y[j * 2]) * 0.5);
      w0.push_back(w[j * 2]);
      w1.push_back(w[j * 2 + 1]);
    }
    cw.close("lse_w0", i * 2, gw[i * 2], stable_lse(f, &w0), 1e-12);
    cw.close("lse_w1", i * 2 + 1, gw[i * 2 + 1], stable_lse(f, &w1), 1e-12);
  }
  report.add(cw);
}

// The K smallest of each component, by repeated selection: the smallest value not taken
// yet, the earliest j among equal values; (+inf, -1) once no term is left.
void kmin_case(const char* name, int64_t m) {
  constexpr int K = 3;
  harness::Case c(name);
  const TieData d = tie_data(N, m > 0 ? m : 1);
  std::vector<double> vals(N * K * 2, -1);
  std::vector<int64_t> idx(N * K * 2, -7);
  int rc = harness::run_cpu<Distances, lk::KMinRed<2, K, 1, 1>, double>(
      1, N, m, {d.x.data(), d.y.data()}, {0, 0}, vals.data(), idx.data(), nullptr, 1);
  c.equal("status", 0, rc, 0);
  for (int64_t i = 0; i < N; ++i)
    for (int comp = 0; comp < 2; ++comp) {
      std::vector<bool> taken(m, false);
      for (int k = 0; k < K; ++k) {
        double best = INFINITY;
        int64_t where = -1;
        for (int64_t j = 0; j < m; ++j) {
          const double v = distance(d, i, j, comp);
          if (!taken[j] && v < best) { best = v; where = j; }
        }
        if (where >= 0) taken[where] = true;
        const int64_t at = (i * K + k) * 2 + comp;  // component d of the k-th at k * D + d
        c.close("vals", at, vals[at], best, 0);
        c.equal("idx", at, idx[at], where);
      }
    }
  report.add(c);
}

}  // namespace

int main() {
  sum_gaussian<double>("sum_gaussian_f64", 1e-12);
  sum_gaussian<float>("sum_gaussian_f32", 2e-6);
  batch_broadcast();
  threads_cases();
  extremum<0, 1>("min_argmin_ties");
  extremum<1, 1>("max_argmax_ties");
  extremum<0, 0>("argmin_no_values");
  logsumexp();
  kmin_case("kmin_k3_ties", M);
  kmin_case("kmin_k3_fewer_terms_than_k", 2);
  kmin_case("kmin_k3_no_term", 0);
  return report.exit_code();
}
