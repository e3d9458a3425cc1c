// harness.h: what the engine-header test programs share: a deterministic random source,
// the report format that tests/engine/test_engine_headers.py reads, and the one call into
// the CPU engine (run_cpu), so that a change of cpu_run's signature is adapted here once.
//
// Report: one line per case, "PASS <case> <detail>" or "FAIL <case> <detail>"; main
// returns the number of failed cases (capped at 100), so any mismatch is a nonzero exit.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace harness {

// xorshift64*: the same numbers on every platform and compiler.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 2654435761u + 88172645463325252ull) {}
  uint64_t next() {
    s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
    return s * 2685821657736338717ull;
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * (double)(next() >> 11) * 0x1.0p-53; }
  int64_t integer(int64_t lo, int64_t hi) { return lo + (int64_t)(next() % (uint64_t)(hi - lo + 1)); }
};

template <class T>
std::vector<T> uniform(Rng& rng, int64_t n, double lo, double hi) {
  std::vector<T> v((size_t)n);
  for (auto& x : v) x = (T)rng.uniform(lo, hi);
  return v;
}

// One case's verdict, built up by the checks below.
struct Case {
  std::string name;
  int64_t mismatches = 0;
  double worst = 0;  // largest relative error seen by close()
  std::string first;  // the first mismatch, described

  explicit Case(std::string n) : name(std::move(n)) {}
  void fail(const std::string& what) {
    if (mismatches++ == 0) first = what;
  }
  // |got - want| <= atol + rtol |want|; equal infinities and two NaN also match.
  void close(const char* what, int64_t at, double got, double want, double rtol, double atol = 0) {
    bool ok;
    if (std::isnan(want) || std::isnan(got)) ok = std::isnan(want) && std::isnan(got);
    else if (std::isinf(want) || std::isinf(got)) ok = got == want;
    else {
      const double err = std::fabs(got - want);
      ok = err <= atol + rtol * std::fabs(want);
      if (want != 0) worst = std::fmax(worst, err / std::fabs(want));
    }
    if (!ok) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "%s[%lld]: got %.17g, want %.17g", what, (long long)at, got, want);
      fail(buf);
    }
  }
  void equal(const char* what, int64_t at, int64_t got, int64_t want) {
    if (got != want) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "%s[%lld]: got %lld, want %lld", what, (long long)at,
                    (long long)got, (long long)want);
      fail(buf);
    }
  }
  void truth(const char* what, bool ok) {
    if (!ok) fail(what);
  }
};

struct Report {
  int failed = 0;
  void add(const Case& c) {
    if (c.mismatches == 0) {
      std::printf("PASS %s max_rel_err=%.3g\n", c.name.c_str(), c.worst);
    } else {
      ++failed;
      std::printf("FAIL %s %lld mismatches, first: %s\n", c.name.c_str(),
                  (long long)c.mismatches, c.first.c_str());
    }
    std::fflush(stdout);
  }
  int exit_code() const { return failed > 100 ? 100 : failed; }
};

}  // namespace harness

#ifdef LK_HARNESS_CPU
#include "lk_cpu_engine.h"

namespace harness {

// The CPU engine below its entry macro: arguments as the engine reads them (args[v] for
// argument v, batch b at args[v] + b * batch_strides[v]; outputs nbatch x nout x VALS and
// x IDXS; DualSum columns nbatch x nred x COLS). The one place that knows cpu_run's
// signature. `ranges`: a block-sparse reduction's range sets (lk_ranges.h), dense by default.
template <class F, class R, class T, bool SPARSE = false>
int run_cpu(int64_t nbatch, int64_t nout, int64_t nred, const std::vector<const T*>& args,
            const std::vector<int64_t>& batch_strides, T* vals, int64_t* idx, T* cols,
            int nthreads, const lk::RangeSets& ranges = lk::RangeSets{}) {
  return lk::cpu_run<F, R, T, SPARSE>(nbatch, nout, nred, args.data(), batch_strides.data(),
                                      vals, idx, cols, nthreads, ranges);
}

}  // namespace harness
#endif
