// lk_ranges.h: which terms each output row reduces over, for both engines: all of them
// (a dense reduction), or a block-sparse set of intervals (pykeops's `ranges`, laid out by
// runtime/ranges.py into lk_launch.h's fields).
//
// A range set partitions the output rows into clusters; each cluster reduces over a list
// of sorted, disjoint intervals of reduced indices (possibly none: its rows get the
// reduction's identity). A dense reduction is one cluster of every row with one interval,
// [0, nred): the engines walk both the same way.
#pragma once

#include "lk_math.h"  // LK_HD
#include "lk_std.h"

#ifndef __CUDACC_RTC__  // the CPU engine's part (NVRTC compiles device code only)
#include <algorithm>
#include <vector>
#endif

namespace lk {

// One cluster's terms: `count` intervals [begin(k), end(k)), or [0, nred) when `iv` is null.
struct TermList {
  const int64_t* iv;
  int64_t count, nred;

  LK_HD LK_INLINE int64_t begin(int64_t k) const { return iv ? iv[2 * k] : 0; }
  LK_HD LK_INLINE int64_t end(int64_t k) const { return iv ? iv[2 * k + 1] : nred; }
  LK_HD int64_t total() const {
    int64_t n = 0;
    for (int64_t k = 0; k < count; ++k) n += end(k) - begin(k);
    return n;
  }
  // fn(j0, j1) for each nonempty piece [j0, j1) of terms lo .. hi-1 of the intervals laid
  // end to end (a split's share of the list), in increasing j.
  template <class Fn>
  LK_HD LK_INLINE void walk(int64_t lo, int64_t hi, Fn&& fn) const {
    int64_t pos = 0;
    for (int64_t k = 0; k < count && pos < hi; ++k) {
      const int64_t a = begin(k), len = end(k) - a;
      const int64_t s = lo > pos ? lo - pos : 0, e = hi - pos < len ? hi - pos : len;
      if (s < e) fn(a + s, a + e);
      pos += len;
    }
  }
  // The first term of that share, or -1 when it has none.
  LK_HD int64_t first(int64_t lo, int64_t hi) const {
    int64_t j = -1;
    walk(lo, hi, [&](int64_t j0, int64_t) { j = j < 0 ? j0 : j; });
    return j;
  }
};

// The block-sparse fields of LkLaunch (lk_launch.h documents the layout), read only by a
// block-sparse library (a dense one is another build: it never looks at them).
struct RangeSets {
  const int64_t* bounds;
  const int64_t* offsets;
  const int64_t* intervals;
  const int64_t* block_ends;  // CUDA only
  int64_t nclusters, nintervals, nsets;

  LK_HD LK_INLINE int64_t set_of(int64_t batch) const { return nsets == 1 ? 0 : batch; }
  LK_HD LK_INLINE const int64_t* bounds_of(int64_t s) const { return bounds + s * (nclusters + 1); }
  // Cluster c of set s: its rows [row_begin, row_end) and its terms.
  LK_HD LK_INLINE int64_t row_begin(int64_t s, int64_t c) const { return bounds_of(s)[c]; }
  LK_HD LK_INLINE int64_t row_end(int64_t s, int64_t c) const { return bounds_of(s)[c + 1]; }
  LK_HD LK_INLINE TermList terms(int64_t s, int64_t c, int64_t nred) const {
    const int64_t* off = offsets + s * (nclusters + 1);
    return {intervals + s * 2 * nintervals + 2 * off[c], off[c + 1] - off[c], nred};
  }
};

#ifndef __CUDACC_RTC__
// CPU engine: rows [i0, i0 + nb) of one cluster (all rows: dense) and their terms.
struct RowBlock {
  int64_t i0;
  int nb;
  TermList terms;
};

// The row blocks of a block-sparse reduction for batch b (IB rows at most, cut at cluster
// bounds), and how many (row, term) pairs they have in all.
template <int IB>
int64_t sparse_row_blocks(const RangeSets& rs, int64_t b, int64_t nred,
                          std::vector<RowBlock>& blocks) {
  blocks.clear();
  const int64_t s = rs.set_of(b);
  int64_t pairs = 0;
  for (int64_t c = 0; c < rs.nclusters; ++c) {
    const TermList terms = rs.terms(s, c, nred);
    const int64_t end = rs.row_end(s, c), nterms = terms.total();
    for (int64_t i0 = rs.row_begin(s, c); i0 < end; i0 += IB) {
      const int nb = (int)std::min<int64_t>(IB, end - i0);
      blocks.push_back({i0, nb, terms});
      pairs += nb * nterms;
    }
  }
  return pairs;
}
#endif

}  // namespace lk
