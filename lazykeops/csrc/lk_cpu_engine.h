// lk_cpu_engine.h: the tiled CPU map-reduce engine.
//
// The generated source defines `struct LkFormula` (argument table and `eval`) and
// `using LkReduction = ...`, then includes this header and instantiates LK_CPU_ENTRY(T).
//
// Layout: "i" below is the output index and "j" the reduced one (the Python side swaps
// the categories for a reduction over i). For each batch, the j-variables are first
// transposed into one structure-of-arrays buffer (component c of y_j at c * ystride + j),
// so that the inner loop over j reads contiguous memory and vectorises; the i-variables
// of the current row are packed into a small contiguous buffer, and the parameters into
// one on the heap (they may have millions of components: never a copy on the stack).
// OpenMP splits the output rows; each thread evaluates the formula on a tile of j into a
// per-thread buffer (component k of term j at k * TILE + j), then folds the tile into the
// row's reduction state. All indices are int64.
//
// A DualSum (gradients) also sums its column components over i: each thread adds its
// rows' terms into column partials in double, and the threads' partials are then summed
// into the column output. The j range is covered in spans of column_span terms so that
// these partials take a bounded memory per thread, whatever M (over the whole range they
// would take COLS * M doubles per thread); with several spans, the rows' States persist
// from one span to the next (one per row) and are finalized after the last.
//
// A formula rendered with a chunk plan (compile/chunking.py: sums over variables of more
// than a few dozen components) first gets its sums for the row block and the tile, one
// chunk of components at a time (chunk_sums); `eval` then reads them as scalars. Outputs
// componentwise in the wide variables (gradients of kernels: c_ij (x_i - y_j)) are written
// chunk by chunk too (chunk_outputs), from scalars `eval` leaves past DIMOUT. The loop
// over j stays vectorised at any width, where `eval`'s own loops over thousands of
// components would not be.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <omp.h>

#include "lk_layout.h"
#include "lk_math.h"
#include "lk_ranges.h"
#include "lk_reductions.h"

namespace lk {

// What the generated `eval` reads its arguments through, for one (i, j) pair.
template <class F, class T>
struct CpuPair {
  // __restrict__: the tile buffer written in the same loop never aliases the inputs,
  // which lets the compiler hoist the loads of i-variables and parameters.
  const T* __restrict__ xi;  // packed i-variables of the current row
  const T* __restrict__ yj;  // j-variables in SoA layout, already offset to the current j
  int64_t ystride;           // distance between two components of a j-variable
  const T* __restrict__ pm;  // packed parameters

  template <int POS>
  LK_INLINE T var(int k) const {
    constexpr int cat = F::CAT[POS];
    constexpr int off = packed_offset<F>(cat, POS);
    if constexpr (cat == CAT_I) return xi[off + k];
    else if constexpr (cat == CAT_J) return yj[(int64_t)(off + k) * ystride];
    else return pm[off + k];
  }
};

// The same for a chunked formula (one rendered with WIDE): chunk_* and output_* read the
// wide variables' components c0 + k, `eval` reads sum m of the current term at
// sums[m * TILE], and output_* read scalar s of the current term at scalars[s * TILE].
template <class F, class T, int TILE>
struct CpuChunkPair : CpuPair<F, T> {
  int c0;
  const T* __restrict__ sums;
  const T* __restrict__ scalars;

  LK_INLINE int chunk_start() const { return c0; }
  template <int POS>
  LK_INLINE T wvar(int k) const { return this->template var<POS>(c0 + k); }
  template <int POS>
  LK_INLINE T pvar(int k) const { return this->template var<POS>(c0 + k); }
  template <int M>
  LK_INLINE T part() const { return sums[(int64_t)M * TILE]; }
  template <int S>
  LK_INLINE T scalar() const { return scalars[(int64_t)S * TILE]; }
};

// Formulas with chunked outputs (compile/chunking.py) define NSCALARS: the scalars `eval`
// computes past DIMOUT for output_full / output_tail.
template <class F, class = void>
struct HasChunkedOutputs : std::false_type {};
template <class F>
struct HasChunkedOutputs<F, std::void_t<decltype(F::NSCALARS)>> : std::true_type {};

// Rows of the per-thread tile buffer: the formula's values, then those scalars.
template <class F>
constexpr int buffer_rows() {
  if constexpr (HasChunkedOutputs<F>::value) return F::DIMOUT + F::NSCALARS;
  else return F::DIMOUT;
}

// Tile width over j: wide enough for SIMD and loop overhead, small enough that the
// per-thread buffer (TILE * buffer_rows scalars) stays in L1/L2. Chunked outputs of
// hundreds of components get a buffer in L2 rather than tiles of 16 terms (2x faster at
// D = 512 on the CPU machine).
template <class F>
constexpr int tile_width() {
  int t = (HasChunkedOutputs<F>::value ? 65536 : 16384) / buffer_rows<F>();
  t = t > 512 ? 512 : t;
  t = t < 16 ? 16 : t;
  return t - t % 16;
}

// Where `eval` writes component k of the current term: buf[k * TILE + j]. Writing there
// directly, rather than into a local array copied afterwards, matters: gcc turns such an
// array into one private copy per SIMD lane and then gives up vectorising the j loop.
template <class T, int TILE>
struct TileColumn {
  T* __restrict__ p;
  LK_INLINE T& operator[](int k) const { return p[(int64_t)k * TILE]; }
};

// Terms j0 .. j0+n-1 of the tile buffer into a row's State (lk_reductions.h): sums
// through a tile accumulator, selections term by term (a term's component k: r[k]).
template <class R, int TILE, class T>
LK_INLINE void fold_tile(typename R::State& st, const T* buf, int n, int64_t j0) {
  if constexpr (R::ACC_PER_TILE) {
    typename R::template Acc<T> acc;
    R::acc_init(acc);
    R::tile_acc(acc, buf, TILE, n);
    R::acc_fold(st, acc);
  } else {
    for (int j = 0; j < n; ++j) R::acc_push(st, TileColumn<const T, TILE>{buf + j}, j0 + j);
  }
}

// Rows handled together: each tile of j is reused by IB rows while it is in L1, and the
// column sums of DualSum are first gathered over the IB rows in T, then carried in double
// (one double update per IB pairs instead of one per pair). Fewer rows for big states.
template <class R>
constexpr int row_block() {
  int ib = (int)(65536 / sizeof(typename R::State));
  return ib > 16 ? 16 : (ib < 1 ? 1 : ib);
}

// The i-variables of row i, packed contiguously.
template <class F, class T>
LK_INLINE void pack_row(const T* const* args, const int64_t* batch_strides, int64_t b,
                        int64_t i, T* xi) {
  for (int v = 0; v < F::NARGS; ++v) {
    if (F::CAT[v] != CAT_I) continue;
    const T* src = args[v] + b * batch_strides[v] + i * F::DIM[v];
    const int off = packed_offset<F>(CAT_I, v);
    for (int k = 0; k < F::DIM[v]; ++k) xi[off + k] = src[k];
  }
}

// col_tile[k][j] += SIGN * buf[FIRST + k][j]: the column part of a DualSum tile.
template <int FIRST, int COLS, int TILE, int SIGN, class T>
LK_INLINE void add_columns(T* __restrict__ col_tile, const T* __restrict__ buf, int n) {
  for (int k = 0; k < COLS; ++k) {
    const T* row = buf + (int64_t)(FIRST + k) * TILE;
    T* part = col_tile + (int64_t)k * TILE;
#pragma omp simd
    for (int j = 0; j < n; ++j) part[j] += SIGN > 0 ? row[j] : -row[j];
  }
}

// Terms per span of a DualSum's columns: each thread's column partials hold
// COLUMN_SPAN_DOUBLES doubles at most (2 MB, in cache while the rows sweep them), a whole
// number of tiles. The gradient in y of a kernel at D = 3 (3 columns) runs in one span up
// to M = 87,040.
constexpr int64_t COLUMN_SPAN_DOUBLES = 1 << 18;
template <class F, int COLS>
constexpr int64_t column_span() {
  const int64_t tiles = COLUMN_SPAN_DOUBLES / COLS / tile_width<F>();
  return (tiles > 1 ? tiles : 1) * tile_width<F>();
}

template <class F>
constexpr int chunked_sum_count() {
  if constexpr (IsChunked<F>::value) return F::NCHUNKED;
  else return 0;
}

// sums[(r * NCHUNKED + m) * TILE + j]: the chunked sums m of rows r < nb and terms j < n,
// CHUNK components at a time, so that the chunk's components of the tile's j-variables
// stay in cache while every row of the block uses them. (Handling several rows in one
// loop over j, to share the loads, measured slower with gcc.)
template <class F, class T, int TILE>
void chunk_sums(int nb, const T* x_block, const T* yj, int64_t ystride, const T* pm, int n,
                T* __restrict__ sums) {
  constexpr int W = F::WIDE, NCH = F::NCHUNKED, DI = packed_size<F>(CAT_I);
  std::fill(sums, sums + (int64_t)nb * NCH * TILE, T(0));
  for (int c0 = 0; c0 < W; c0 += CHUNK) {
    for (int r = 0; r < nb; ++r) {
      const T* xi = x_block + (int64_t)r * DI;
      T* row_sums = sums + (int64_t)r * NCH * TILE;
      if (c0 + CHUNK <= W) {
#pragma omp simd
        for (int j = 0; j < n; ++j) {
          CpuChunkPair<F, T, TILE> in{{xi, yj + j, ystride, pm}, c0, nullptr, nullptr};
          F::template chunk_full<T>(in, TileColumn<T, TILE>{row_sums + j});
        }
      } else if constexpr (W % CHUNK != 0) {
#pragma omp simd
        for (int j = 0; j < n; ++j) {
          CpuChunkPair<F, T, TILE> in{{xi, yj + j, ystride, pm}, c0, nullptr, nullptr};
          F::template chunk_tail<T>(in, TileColumn<T, TILE>{row_sums + j});
        }
      }
    }
  }
}

// The chunked outputs of one row for terms j < n, written into the tile buffer at their
// offsets, CHUNK components at a time, from the scalars `eval` left past DIMOUT.
template <class F, class T, int TILE>
void chunk_outputs(const T* xi, const T* yj, int64_t ystride, const T* pm, int n, T* buf) {
  constexpr int W = F::WIDE;
  const T* scalars = buf + (int64_t)F::DIMOUT * TILE;
  for (int c0 = 0; c0 < W; c0 += CHUNK) {
    if (c0 + CHUNK <= W) {
#pragma omp simd
      for (int j = 0; j < n; ++j) {
        CpuChunkPair<F, T, TILE> in{{xi, yj + j, ystride, pm}, c0, nullptr, scalars + j};
        F::template output_full<T>(in, TileColumn<T, TILE>{buf + j});
      }
    } else if constexpr (W % CHUNK != 0) {
#pragma omp simd
      for (int j = 0; j < n; ++j) {
        CpuChunkPair<F, T, TILE> in{{xi, yj + j, ystride, pm}, c0, nullptr, scalars + j};
        F::template output_tail<T>(in, TileColumn<T, TILE>{buf + j});
      }
    }
  }
}

// SPARSE: a block-sparse library (runtime/ranges.py), which walks `ranges`; a dense one
// ignores them, and its loops are those of a single interval [0, nred), folded away.
template <class F, class R, class T, bool SPARSE = false>
int cpu_run(int64_t nbatch, int64_t nout, int64_t nred, const T* const* args,
            const int64_t* batch_strides, T* vals, int64_t* idx, T* cols, int nthreads,
            const RangeSets& ranges = RangeSets{}) {
  constexpr int COLS = ColumnCount<R>::value;  // trailing components summed over i
  constexpr int DI = packed_size<F>(CAT_I);
  constexpr int DJ = packed_size<F>(CAT_J);
  constexpr int DP = packed_size<F>(CAT_P);
  constexpr int TILE = tile_width<F>();
  constexpr int IB = row_block<R>();
  constexpr int NCHUNKED = chunked_sum_count<F>();
  const int64_t ystride = (nred + 15) / 16 * 16;
  std::vector<T> ysoa((size_t)std::max<int64_t>(DJ * ystride, 1));
  std::vector<T> params((size_t)(DP > 0 ? DP : 1));
  const T* pm = params.data();
  const int team = nthreads > 1 ? nthreads : 1;
  // DualSum: the spans of j, each thread's column partials for one span (component k of
  // term j0 + q at k * span + q), and the rows' States across spans when there are several.
  int64_t span = nred, nspans = 1;
  if constexpr (COLS > 0) {
    if (nred > column_span<F, COLS>()) {
      span = column_span<F, COLS>();
      nspans = (nred + span - 1) / span;
    }
  }
  std::vector<double> col_part((size_t)(COLS > 0 ? team * COLS * span : 0));
  std::vector<typename R::State> kept((size_t)(nspans > 1 ? nout : 0));
  std::vector<RowBlock> sparse_blocks;

  for (int64_t b = 0; b < nbatch; ++b) {
    int64_t pairs = nout * nred, nblocks = (nout + IB - 1) / IB;
    if constexpr (SPARSE) {
      pairs = sparse_row_blocks<IB>(ranges, b, nred, sparse_blocks);
      nblocks = (int64_t)sparse_blocks.size();
    }
    const bool parallel = nthreads > 1 && pairs * (F::DIMOUT + DJ) > 200000;
    auto row_block = [&](int64_t blk) -> RowBlock {
      if constexpr (SPARSE) return sparse_blocks[blk];
      return {blk * IB, (int)std::min<int64_t>(IB, nout - blk * IB), TermList{nullptr, 1, nred}};
    };
    for (int v = 0; v < F::NARGS; ++v) {
      const T* src = args[v] + b * batch_strides[v];
      const int dim = F::DIM[v];
      if (F::CAT[v] == CAT_P) {
        std::copy(src, src + dim, params.data() + packed_offset<F>(CAT_P, v));
      } else if (F::CAT[v] == CAT_J) {
        T* dst = ysoa.data() + (int64_t)packed_offset<F>(CAT_J, v) * ystride;
        for (int64_t j = 0; j < nred; ++j)
          for (int k = 0; k < dim; ++k) dst[k * ystride + j] = src[j * dim + k];
      }
    }

#pragma omp parallel num_threads(nthreads) if (parallel)
    {
      std::vector<T> tile_buf((size_t)TILE * buffer_rows<F>());
      T* __restrict__ buf = tile_buf.data();
      std::vector<T> col_tile((size_t)(COLS > 0 ? COLS * TILE : 0));
      double* col_acc = col_part.data() + (int64_t)omp_get_thread_num() * COLS * span;
      const int nparts = omp_get_num_threads();
      std::vector<T> x_block((size_t)IB * (DI > 0 ? DI : 1));
      std::vector<typename R::State> states(IB);
      std::vector<T> sums((size_t)IB * NCHUNKED * TILE);
      for (int64_t s = 0; s < nspans; ++s) {
        const int64_t s0 = s * span, s1 = std::min(nred, s0 + span);
        if constexpr (COLS > 0) std::fill(col_acc, col_acc + COLS * span, 0.0);
#pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < nblocks; ++blk) {
          const auto [i0, nb, terms] = row_block(blk);
          typename R::State* st = nspans > 1 ? kept.data() + i0 : states.data();
          const int64_t j_first = SPARSE ? terms.first(0, nred) : (nred ? 0 : -1);
          for (int r = 0; r < nb; ++r) {
            pack_row<F>(args, batch_strides, b, i0 + r, x_block.data() + (int64_t)r * DI);
            if (s == 0) {
              R::init(st[r]);
              if (j_first != 0) start_at<R>(st[r], j_first);
            }
          }
          // The block's terms within this span, interval by interval, in tiles.
          for (int64_t iv = 0; iv < terms.count; ++iv) {
            const int64_t jbeg = std::max(terms.begin(iv), s0), jend = std::min(terms.end(iv), s1);
            for (int64_t j0 = jbeg; j0 < jend; j0 += TILE) {
              const int n = (int)std::min<int64_t>(TILE, jend - j0);
              const T* yj = ysoa.data() + j0;
              if constexpr (COLS > 0) std::fill(col_tile.begin(), col_tile.end(), T(0));
              if constexpr (NCHUNKED > 0)
                chunk_sums<F, T, TILE>(nb, x_block.data(), yj, ystride, pm, n, sums.data());
              for (int r = 0; r < nb; ++r) {
                const T* xi = x_block.data() + (int64_t)r * DI;
                if constexpr (IsChunked<F>::value) {
                  const T* row_sums = sums.data() + (int64_t)r * NCHUNKED * TILE;
#pragma omp simd
                  for (int j = 0; j < n; ++j) {
                    CpuChunkPair<F, T, TILE> in{{xi, yj + j, ystride, pm}, 0, row_sums + j, nullptr};
                    F::template eval<T>(in, TileColumn<T, TILE>{buf + j});
                  }
                  if constexpr (HasChunkedOutputs<F>::value)
                    chunk_outputs<F, T, TILE>(xi, yj, ystride, pm, n, buf);
                } else {
#pragma omp simd
                  for (int j = 0; j < n; ++j) {
                    CpuPair<F, T> in{xi, yj + j, ystride, pm};
                    F::template eval<T>(in, TileColumn<T, TILE>{buf + j});
                  }
                }
                fold_tile<R, TILE>(st[r], buf, n, j0);
                if constexpr (COLS > 0)
                  add_columns<R::COL_FIRST, COLS, TILE, R::COL_SIGN>(col_tile.data(), buf, n);
              }
              if constexpr (COLS > 0) {
                for (int k = 0; k < COLS; ++k) {
                  const T* part = col_tile.data() + (int64_t)k * TILE;
                  double* acc = col_acc + (int64_t)k * span + (j0 - s0);
#pragma omp simd
                  for (int j = 0; j < n; ++j) acc[j] += part[j];
                }
              }
            }
          }
          if (s == nspans - 1)
            for (int r = 0; r < nb; ++r)
              R::finalize(st[r], vals + (b * nout + i0 + r) * R::VALS,
                          idx + (b * nout + i0 + r) * R::IDXS);
        }
        // The span's column sums: the threads' partials added in a fixed order (the
        // loop above ended on a barrier; this one ends on another before the next span
        // refills the partials).
        if constexpr (COLS > 0) {
#pragma omp for schedule(static)
          for (int64_t j = s0; j < s1; ++j)
            for (int k = 0; k < COLS; ++k) {
              double total = 0;
              for (int t = 0; t < nparts; ++t)
                total += col_part[((int64_t)t * COLS + k) * span + (j - s0)];
              cols[(b * nred + j) * COLS + k] = T(total);
            }
        }
      }
    }
  }
  return 0;
}

}  // namespace lk

// The entry point each generated library exports (built with -fvisibility=hidden), called
// through ctypes with the struct of lk_launch.h, which the generated source includes first.
#define LK_CPU_ENTRY(T)                                                                \
  LK_ABI_EXPORTS                                                                       \
  extern "C" __attribute__((visibility("default"))) int lk_launch(LkLaunch* a) {       \
    if (!lk::launch_matches(a)) return LK_STATUS_ABI_MISMATCH;                         \
    try {                                                                              \
      if ((a->row_bounds != nullptr) != (LK_BLOCK_SPARSE != 0))                         \
        return LK_STATUS_RANGES_MISMATCH;                                              \
      return lk::cpu_run<LkFormula, LkReduction, T, LK_BLOCK_SPARSE != 0>(             \
          a->nbatch, a->nout, a->nred, reinterpret_cast<const T* const*>(a->args),     \
          a->batch_strides, static_cast<T*>(a->vals), a->idx, static_cast<T*>(a->cols), \
          a->nthreads,                                                                 \
          lk::RangeSets{a->row_bounds, a->interval_offsets, a->intervals, nullptr,      \
                        a->nclusters, a->nintervals, a->range_sets});                  \
    } catch (...) {                                                                    \
      return LK_STATUS_FAILED;                                                         \
    }                                                                                  \
  }
