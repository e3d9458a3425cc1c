// policies.cpp: the reduction policies of lk_reductions.h on the host, every accumulation
// path against naive loops:
//   tile        the CPU engine's path: init, fold_tile (terms column-wise in a buffer),
//               finalize
//   acc         the CUDA kernel's path (reduce): acc_init / acc_push per term,
//               acc_fold after each tile when ACC_PER_TILE, else once at the end
//   *_split     the same over j split in ranges (one of a single term, one empty, as the
//               CUDA split scheme makes when nsplit does not divide nred), whose States are
//               combined by merge in order of j (merge_splits)
//   acc_lanes*  the acc path split among 4 lanes as the tensor-core kernel's fragment
//               epilogue splits a row (lane (j / 2) % 4 takes term j), whose States are
//               merged by the butterfly of merge_lanes, seen from lane 0 and from lane 3
// in float and double, over integer-valued terms with ties whose exp overflows (values
// near 1000), the same with a few NaN terms, and terms that are mostly NaN.
#include "harness.h"

#include "lk_cpu_engine.h"

namespace {

constexpr int64_t M = 1001;
constexpr int W = 3;  // components per term: f0, f1 (ties), f2 (positive weights)
constexpr int ACC_TILE = 256, CPU_TILE = 100;
const int64_t SPLITS[] = {0, 300, 301, M, M};  // ranges [0,300) [300,301) [301,M) [M,M)

using Terms = std::vector<double>;  // M x W, term j's component k at j * W + k

Terms make_terms(const char* kind) {
  harness::Rng rng(21);
  Terms t(M * W);
  for (int64_t j = 0; j < M; ++j) {
    t[j * W + 0] = 1000 + (double)rng.integer(0, 40);
    t[j * W + 1] = (double)rng.integer(0, 9);
    t[j * W + 2] = rng.uniform(0.1, 2);
  }
  const std::string k = kind;
  if (k == "nan") {
    for (int64_t j : {5, 600}) t[j * W + 0] = NAN;
    for (int64_t j : {300, 900}) t[j * W + 1] = NAN;
  } else if (k == "mostly_nan") {
    for (int64_t j = 0; j < M; ++j) {
      if (j != 3 && j != 777) t[j * W + 0] = NAN;
      t[j * W + 1] = NAN;
    }
  }
  return t;
}

double at(const Terms& t, int64_t j, int k) { return t[j * W + k]; }

// ---------------------------------------------------------------- paths
template <class R, class T>
void acc_range(const std::vector<T>& terms, int64_t j0, int64_t j1, typename R::State& st) {
  typename R::template Acc<T> acc;
  R::init(st);
  R::acc_init(acc);
  for (int64_t t0 = j0; t0 < j1; t0 += ACC_TILE) {
    for (int64_t j = t0; j < std::min<int64_t>(j1, t0 + ACC_TILE); ++j)
      R::acc_push(acc, terms.data() + j * W, j);
    if constexpr (R::ACC_PER_TILE) {
      R::acc_fold(st, acc);
      R::acc_init(acc);
    }
  }
  if constexpr (!R::ACC_PER_TILE) R::acc_fold(st, acc);
}

template <class R, class T>
void tile_range(const std::vector<T>& terms, int64_t j0, int64_t j1, typename R::State& st) {
  std::vector<T> buf(W * CPU_TILE);
  R::init(st);
  for (int64_t t0 = j0; t0 < j1; t0 += CPU_TILE) {
    const int n = (int)std::min<int64_t>(CPU_TILE, j1 - t0);
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < W; ++k) buf[k * CPU_TILE + j] = terms[(t0 + j) * W + k];
    lk::fold_tile<R, CPU_TILE>(st, buf.data(), n, t0);
  }
}

template <class R, class T, bool ACC>
void run_path(const std::vector<T>& terms, bool split, std::vector<T>& vals,
              std::vector<int64_t>& idx) {
  auto range = [&](int64_t j0, int64_t j1, typename R::State& st) {
    if constexpr (ACC) acc_range<R>(terms, j0, j1, st);
    else tile_range<R>(terms, j0, j1, st);
  };
  typename R::State st;
  if (!split) {
    range(0, M, st);
  } else {
    range(SPLITS[0], SPLITS[1], st);
    for (size_t s = 1; s + 1 < sizeof SPLITS / sizeof SPLITS[0]; ++s) {
      typename R::State part;
      range(SPLITS[s], SPLITS[s + 1], part);
      R::merge(st, part);
    }
  }
  vals.assign(R::VALS > 0 ? R::VALS : 1, T(-12345));
  idx.assign(R::IDXS > 0 ? R::IDXS : 1, -12345);
  R::finalize(st, vals.data(), idx.data());
}

// The States of 4 lanes, lane (j / 2) % 4 pushing term j, merged as merge_lanes does on
// lane `writer`: with its partner at distance 1, then with that pair's partner pair.
template <class R, class T>
void run_lanes(const std::vector<T>& terms, int writer, std::vector<T>& vals,
               std::vector<int64_t>& idx) {
  typename R::State st[4];
  for (int lane = 0; lane < 4; ++lane) {
    typename R::template Acc<T> acc;
    R::init(st[lane]);
    R::acc_init(acc);
    for (int64_t t0 = 0; t0 < M; t0 += ACC_TILE) {
      for (int64_t j = t0; j < std::min<int64_t>(M, t0 + ACC_TILE); ++j)
        if ((j / 2) % 4 == lane) R::acc_push(acc, terms.data() + j * W, j);
      if constexpr (R::ACC_PER_TILE) {
        R::acc_fold(st[lane], acc);
        R::acc_init(acc);
      }
    }
    if constexpr (!R::ACC_PER_TILE) R::acc_fold(st[lane], acc);
  }
  for (int o = 1; o < 4; o *= 2) {
    typename R::State next[4];
    for (int lane = 0; lane < 4; ++lane) {
      next[lane] = st[lane];
      R::merge(next[lane], st[lane ^ o]);
    }
    for (int lane = 0; lane < 4; ++lane) st[lane] = next[lane];
  }
  vals.assign(R::VALS > 0 ? R::VALS : 1, T(-12345));
  idx.assign(R::IDXS > 0 ? R::IDXS : 1, -12345);
  R::finalize(st[writer], vals.data(), idx.data());
}

// ---------------------------------------------------------------- naive references
struct Expected {
  std::vector<double> vals;
  std::vector<int64_t> idx;
};

double naive_max(const Terms& t, int k) {  // NaN skipped, as std::fmax does
  double m = -INFINITY;
  for (int64_t j = 0; j < M; ++j) m = std::fmax(m, at(t, j, k));
  return m;
}

Expected naive_sum(const Terms& t) {
  Expected e{{0, 0}, {}};
  for (int64_t j = 0; j < M; ++j)
    for (int k = 0; k < 2; ++k) e.vals[k] += at(t, j, k);
  return e;
}

// log sum_j exp(f_j) w_j, shifted by the maximum; NaN terms and weights by arithmetic.
double naive_lse(const Terms& t, int k, int wk) {
  const double m = naive_max(t, k);
  double s = 0;
  for (int64_t j = 0; j < M; ++j) s += std::exp(at(t, j, k) - m) * (wk < 0 ? 1.0 : at(t, j, wk));
  return m + std::log(s);
}

Expected naive_lse2(const Terms& t) { return {{naive_lse(t, 0, -1), naive_lse(t, 1, -1)}, {}}; }
Expected naive_lse_weighted(const Terms& t) { return {{naive_lse(t, 0, 1), naive_lse(t, 0, 2)}, {}}; }

Expected naive_softmax(const Terms& t) {
  const double m = naive_max(t, 0);
  double z = 0, s1 = 0, s2 = 0;
  for (int64_t j = 0; j < M; ++j) {
    const double e = std::exp(at(t, j, 0) - m);
    z += e;
    s1 += e * at(t, j, 1);
    s2 += e * at(t, j, 2);
  }
  return {{s1 / z, s2 / z}, {}};
}

// The first NaN, else the first smallest value; (+inf, 0) if no term is below +inf.
Expected naive_min_argmin(const Terms& t) {
  Expected e{{0, 0}, {0, 0}};
  for (int k = 0; k < 2; ++k) {
    double best = INFINITY;
    int64_t where = 0;
    for (int64_t j = 0; j < M; ++j) {
      const double v = at(t, j, k);
      if (std::isnan(v)) { best = v; where = j; break; }
      if (v < best) { best = v; where = j; }
    }
    e.vals[k] = best;
    e.idx[k] = where;
  }
  return e;
}

// K = 3 slots per component, component d of slot k at k * 2 + d: the numbers by repeated
// selection (earliest j among equal values), then NaN terms in order of j, then (+inf, -1).
Expected naive_kmin(const Terms& t) {
  constexpr int K = 3;
  Expected e{std::vector<double>(K * 2), std::vector<int64_t>(K * 2)};
  for (int d = 0; d < 2; ++d) {
    std::vector<bool> taken(M, false);
    for (int k = 0; k < K; ++k) {
      double best = INFINITY;
      int64_t where = -1;
      for (int64_t j = 0; j < M; ++j)
        if (!taken[j] && at(t, j, d) < best) { best = at(t, j, d); where = j; }
      if (where < 0)
        for (int64_t j = 0; j < M; ++j)
          if (!taken[j] && std::isnan(at(t, j, d))) { best = NAN; where = j; break; }
      if (where >= 0) taken[where] = true;
      e.vals[k * 2 + d] = best;
      e.idx[k * 2 + d] = where;
    }
  }
  return e;
}

// ---------------------------------------------------------------- checks
harness::Report report;

template <class R, class T>
void check(const std::string& name, const char* data, Expected (*naive)(const Terms&)) {
  harness::Case c(name + "_" + (sizeof(T) == 4 ? "f32" : "f64") + "_" + data);
  const Terms terms = make_terms(data);
  const std::vector<T> tt(terms.begin(), terms.end());
  const Terms exact(tt.begin(), tt.end());  // the terms as T holds them
  const Expected want = naive(exact);
  const double rtol = sizeof(T) == 4 ? 2e-6 : 1e-13;
  const char* paths[] = {"tile", "tile_split", "acc", "acc_split", "acc_lanes0", "acc_lanes3"};
  for (int p = 0; p < 6; ++p) {
    std::vector<T> vals;
    std::vector<int64_t> idx;
    if (p < 2) run_path<R, T, false>(tt, p == 1, vals, idx);
    else if (p < 4) run_path<R, T, true>(tt, p == 3, vals, idx);
    else run_lanes<R, T>(tt, p == 4 ? 0 : 3, vals, idx);
    const std::string what = std::string(paths[p]) + ".vals";
    for (int k = 0; k < R::VALS; ++k) c.close(what.c_str(), k, vals[k], want.vals[k], R::IDXS ? 0 : rtol);
    const std::string iwhat = std::string(paths[p]) + ".idx";
    for (int k = 0; k < R::IDXS; ++k) c.equal(iwhat.c_str(), k, idx[k], want.idx[k]);
  }
  report.add(c);
}

template <class T>
void all_policies(const char* data) {
  check<lk::SumRed<2, lk::BlockSum>, T>("sum_block", data, naive_sum);
  check<lk::SumRed<2, lk::KahanSum>, T>("sum_kahan", data, naive_sum);
  check<lk::SumRed<2, lk::DirectSum>, T>("sum_direct", data, naive_sum);
  check<lk::LogSumExpRed<2, 0>, T>("logsumexp", data, naive_lse2);
  check<lk::LogSumExpRed<1, 2>, T>("logsumexp_weighted", data, naive_lse_weighted);
  check<lk::SoftMaxRed<2>, T>("softmax_weight", data, naive_softmax);
  check<lk::ArgExtremumRed<2, 0, 1, 1>, T>("min_argmin", data, naive_min_argmin);
  check<lk::KMinRed<2, 3, 1, 1>, T>("kmin_argkmin_k3", data, naive_kmin);
}

}  // namespace

int main() {
  for (const char* data : {"ties", "nan", "mostly_nan"}) {
    all_policies<double>(data);
    all_policies<float>(data);
  }
  return report.exit_code();
}
