// lk_cuda_kernel.cuh: the one CUDA kernel skeleton, `reduce`, and what every variant shares:
// the argument and output tables, parameter staging, the two row sources, the rows and
// terms of a thread block (dense or block-sparse), the epilogue and the merge of splits.
//
// reduce<F, R, T, S, K> owns the loops: batches over gridDim.z, the block's rows (RPT per
// thread), the policy's State and Acc per row, the walk over the block's terms in tiles
// (its share of them in the split scheme), folding, the merge of the States of lanes that
// share a row, and writing the outputs (or the split scheme's partial States). A block's
// rows and terms come from the work source W (DenseWork: rows rb * ROWS .. and all of j;
// SparseWork: a piece of one cluster of a block-sparse reduction and its intervals,
// lk_ranges.h). The variant K (lk_cuda_tiles.cuh: TiledVariant, lk_cuda_chunked.cuh:
// ChunkedVariant, lk_cuda_mma.cuh: MmaVariant) fills in:
//   K::Layout  where a thread's RPT rows lie in the block's ROWS rows, and how many lanes
//              share each (StridedRows below; lk_cuda_mma.cuh: FragmentRows).
//   K::Rows    the row source: where a thread's rows keep their i-variables for the batch
//              (RegisterRows, GlobalRows below); `stage<V>(src, row0, row_end)`, `in(r)`.
//   K::Terms   the term evaluator: `TILE`, `SHARED_SCALARS` (shared memory it uses before
//              the parameters) and `tile(...)`, which loads the terms of a TermTile and
//              calls push(r, f, j) with each term's value f for each row r of the thread.
//   and the sizes BLOCK, ROWS, RPT, SHARED, P_IN_SHARED that the host side launches with,
//   and MIN_BLOCKS, the launch bounds' blocks per SM (0: none given; an explicit 1 let
//   ptxas take 80 registers instead of 48 for a LogSumExp at D = 3, 1.04x the time).
#pragma once

#include "lk_std.h"

#include "lk_cuda_in.cuh"
#include "lk_layout.h"
#include "lk_math.h"
#include "lk_ranges.h"
#include "lk_reductions.h"

// Tuning knob (benchmarks/tune_cuda.py): threads per block.
#ifndef LK_CUDA_BLOCK
#define LK_CUDA_BLOCK 256
#endif
// Parameters of up to this many bytes (in the compute type) are copied to shared memory,
// where every thread reads the same address (a broadcast); past it they are read from
// global memory (cached): they would take the tile's shared memory, and past the
// device's limit per block (227 KB on the H100) they could not be copied at all.
#ifndef LK_CUDA_P_SHARED
#define LK_CUDA_P_SHARED 8192
#endif

namespace lk {

// Argument pointers and batch strides, passed by value to the kernel.
template <class F>
struct ArgTable {
  const void* ptr[F::NARGS > 0 ? F::NARGS : 1];
  int64_t batch_stride[F::NARGS > 0 ? F::NARGS : 1];
};

template <class F, class S>
__device__ LK_INLINE const S* arg(const ArgTable<F>& a, int v, int64_t b) {
  return static_cast<const S*>(a.ptr[v]) + b * a.batch_stride[v];
}

// The narrow j-variables (NarrowArgs) of terms j0 .. j0 + n - 1 to `dst`, packed in rows of
// STRIDE compute scalars, read by the whole block with coalesced reads: the chunked
// variant's tile loads.
template <class F, class S, int BLOCK, int STRIDE, class T>
__device__ LK_INLINE void stage_narrow_terms(T* dst, const ArgTable<F>& args, int64_t b,
                                             int64_t j0, int n) {
  static_for<F::NARGS>([&](auto v) {
    constexpr int V = decltype(v)::value;
    if constexpr (F::CAT[V] == CAT_J && !is_wide<F>(V)) {
      constexpr int dim = F::DIM[V], off = narrow_offset<F>(CAT_J, V);
      const S* src = arg<F, S>(args, V, b) + j0 * dim;
      for (int e = threadIdx.x; e < n * dim; e += BLOCK) {
        const int jj = e / dim;
        dst[jj * STRIDE + off + (e - jj * dim)] = to_compute(src[e]);
      }
    }
  });
}

// Where the outputs go: output row t (= batch * nout + i) writes its values at
// vals[t * vstride + voff ...] and its indices at idx[t * istride + ioff ...]. The strides
// exceed the policy's widths when a wide output is computed in slices of components, one
// kernel per slice (runtime/cuda.py).
template <class S>
struct Outputs {
  S* vals;
  int64_t* idx;
  int64_t vstride, voff, istride, ioff;
};

template <class R, class T, class S>
__device__ LK_INLINE void write_outputs(const typename R::State& st, const Outputs<S>& out,
                                        int64_t t) {
  T v[R::VALS > 0 ? R::VALS : 1];
  R::finalize(st, v, out.idx + t * out.istride + out.ioff);
  S* vals = out.vals + t * out.vstride + out.voff;
  for (int k = 0; k < R::VALS; ++k) vals[k] = to_storage<S>(v[k]);
}

// ---------------------------------------------------------------- parameters
// Whether the parameters are staged in shared memory (LK_CUDA_P_SHARED), for every variant.
template <class F, class T>
LK_HD constexpr bool params_in_shared() {
  return (int64_t)packed_size<F>(CAT_P) * (int64_t)sizeof(T) <= LK_CUDA_P_SHARED;
}

template <class F, class T, class S, bool SHARED, int BLOCK>
struct Params {
  T* shared;                                // packed copy, if SHARED
  const S* row[F::NARGS > 0 ? F::NARGS : 1];  // else where each parameter starts

  template <int V>
  __device__ LK_INLINE void stage(const S* src) {
    if constexpr (SHARED) {
      constexpr int dim = F::DIM[V], off = packed_offset<F>(CAT_P, V);
      for (int k = threadIdx.x; k < dim; k += BLOCK) shared[off + k] = to_compute(src[k]);
    } else {
      row[V] = src;
    }
  }
  __device__ LK_INLINE auto in() const {
    if constexpr (SHARED) return Packed<T, AllArgs>{shared};
    else return Pointers<T, S>{row};
  }
};

// ---------------------------------------------------------------- row sources
// A thread's row r < RPT is row0 + Layout::offset(r) of its block; LANES consecutive lanes
// share each row, each reducing part of its terms (their States are merged before one of
// them writes). Rows past the block's end (the output's, or its cluster's) compute on its
// last row and are never written.
LK_HD LK_INLINE int64_t clamp_row(int64_t i, int64_t row_end) {
  return i < row_end ? i : row_end - 1;
}

// Row r of thread t is row t + r * BLOCK: a thread per row, RPT blocks of rows.
template <int BLOCK>
struct StridedRows {
  static constexpr int LANES = 1;
  __device__ static LK_INLINE int offset(int r) { return threadIdx.x + r * BLOCK; }
};

// The i-variables that layout L selects, packed in registers, RPT rows placed by Layout.
template <class F, class T, class S, int RPT, class Layout, class L>
struct RegisterRows {
  static constexpr int D = L::template offset<F>(CAT_I, F::NARGS);
  T x[RPT][D > 0 ? D : 1];

  template <int V>
  __device__ LK_INLINE void stage(const S* src, int64_t row0, int64_t row_end) {
    if constexpr (L::template holds<F>(V)) {
      constexpr int dim = F::DIM[V], off = L::template offset<F>(CAT_I, V);
      for (int r = 0; r < RPT; ++r) {
        const int64_t i = clamp_row(row0 + Layout::offset(r), row_end);
        for (int k = 0; k < dim; ++k) x[r][off + k] = to_compute(src[i * dim + k]);
      }
    }
  }
  __device__ LK_INLINE Packed<T, L> in(int r) const { return {x[r]}; }
};

// The i-variables read from global memory (cached) at each use: for rows too wide for
// registers, whose copy in a thread's local memory would reserve the row's scalars for
// every thread the GPU can hold.
template <class F, class T, class S, int RPT, class Layout>
struct GlobalRows {
  const S* row[RPT][F::NARGS > 0 ? F::NARGS : 1];

  template <int V>
  __device__ LK_INLINE void stage(const S* src, int64_t row0, int64_t row_end) {
    for (int r = 0; r < RPT; ++r)
      row[r][V] = src + clamp_row(row0 + Layout::offset(r), row_end) * F::DIM[V];
  }
  __device__ LK_INLINE Pointers<T, S> in(int r) const { return {row[r]}; }
};

// ---------------------------------------------------------------- a block's work
// The rows [row0, row_end) of one thread block for batch b and the terms it reduces over
// (its split's share), from one of two work sources, passed by value to the kernel:
//   DenseWork    block rb has rows rb * ROWS .. of all of j; split s of nsplit the terms
//                [s * per_split, (s + 1) * per_split).
//   SparseWork   each cluster of a range set has ceil(rows / ROWS) blocks
//                (RangeSets::block_ends, cumulative, built by runtime/ranges.py), found by
//                a binary search; split s takes that share of the cluster's terms laid end
//                to end; blocks past the set's last do nothing (`active` false).
// A block's `walk(fn)` calls fn(jbeg, jend) for each piece of its terms, in increasing j;
// `j_first` is the first term (-1: none), for the extrema's index (lk_reductions.h).
struct DenseWork {
  static constexpr bool PER_BATCH = false;
  int64_t per_split;
  struct Block {
    int64_t row0, row_end, jbeg, jend;
    static constexpr bool active = true;
    __device__ LK_INLINE int64_t j_first() const { return jbeg < jend ? jbeg : -1; }
    template <class Fn>
    __device__ LK_INLINE void walk(Fn&& fn) const { fn(jbeg, jend); }
  };
  template <int ROWS>
  __device__ LK_INLINE Block block(int64_t, int64_t nout, int64_t nred) const {
    const int64_t jbeg = blockIdx.y * per_split;
    const int64_t jend = jbeg + per_split < nred ? jbeg + per_split : nred;
    return {(int64_t)blockIdx.x * ROWS, nout, jbeg, jend};
  }
};

struct SparseWork {
  static constexpr bool PER_BATCH = true;
  RangeSets sets;
  struct Block {
    int64_t row0, row_end, lo, hi;
    TermList terms;
    bool active;
    __device__ LK_INLINE int64_t j_first() const { return terms.first(lo, hi); }
    template <class Fn>
    __device__ LK_INLINE void walk(Fn&& fn) const { terms.walk(lo, hi, fn); }
  };
  template <int ROWS>
  __device__ LK_INLINE Block block(int64_t b, int64_t, int64_t nred) const {
    const int64_t rb = blockIdx.x, s = sets.set_of(b);
    const int64_t* ends = sets.block_ends + s * sets.nclusters;
    int64_t lo = 0, hi = sets.nclusters;  // the first cluster whose blocks reach past rb
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (ends[mid] <= rb) lo = mid + 1; else hi = mid;
    }
    if (lo == sets.nclusters) return {0, 0, 0, 0, TermList{nullptr, 0, nred}, false};
    const int64_t before = lo > 0 ? ends[lo - 1] : 0;
    const TermList terms = sets.terms(s, lo, nred);
    const int64_t total = terms.total(), per_split = (total + gridDim.y - 1) / gridDim.y;
    const int64_t first = blockIdx.y * per_split;
    return {sets.row_begin(s, lo) + (rb - before) * ROWS, sets.row_end(s, lo), first,
            first + per_split < total ? first + per_split : total, terms, true};
  }
};

// ---------------------------------------------------------------- the kernel
// One tile of a block's terms: j0 .. j0 + n - 1, whether it is the first of its piece of
// terms, and how many terms the piece's next tile has (0: none), for a term evaluator that
// loads a tile ahead (lk_cuda_mma.cuh).
struct TermTile {
  int64_t j0;
  int n;
  bool first;
  int next;
};

// `st` merged with the States of the other lanes of its group of LANES consecutive lanes
// (a power of two), by butterfly shuffles of its 32-bit words: every lane of the group ends
// with the merge of all.
template <class R, int LANES>
__device__ LK_INLINE void merge_lanes(typename R::State& st) {
  using State = typename R::State;
  static_assert(sizeof(State) % 4 == 0, "States are shuffled in 32-bit words");
  for (int o = 1; o < LANES; o *= 2) {
    State other;
    const uint32_t* mine = reinterpret_cast<const uint32_t*>(&st);
    uint32_t* theirs = reinterpret_cast<uint32_t*>(&other);
    for (int w = 0; w < (int)(sizeof(State) / 4); ++w)
      theirs[w] = __shfl_xor_sync(0xffffffffu, mine[w], o);
    R::merge(st, other);
  }
}

// A row source that reads other arguments while it stages its rows (the tensor cores'
// weighted distances: the weight) defines bind(args, b), which the kernel calls first.
template <class Rows, class = void>
struct ReadsArguments : std::false_type {};
template <class Rows>
struct ReadsArguments<Rows, std::void_t<decltype(&Rows::bind)>> : std::true_type {};

template <class F, class R, class T, class S, class K, class W>
__global__ void __launch_bounds__(LK_CUDA_BLOCK, K::MIN_BLOCKS)
reduce(int64_t nbatch, int64_t nout, int64_t nred, W work, ArgTable<F> args, Outputs<S> out,
       typename R::State* partial) {
  using Terms = typename K::Terms;
  using Layout = typename K::Layout;
  using Acc = typename R::template Acc<T>;
  constexpr int RPT = K::RPT;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* shared = reinterpret_cast<T*>(shared_raw);

  // A dense block's work is the same for every batch: found once, out of the loop.
  const typename W::Block fixed = [&] {
    if constexpr (W::PER_BATCH) return typename W::Block{};
    else return work.template block<K::ROWS>(0, nout, nred);
  }();
  for (int64_t b = blockIdx.z; b < nbatch; b += gridDim.z) {
    __syncthreads();  // the previous batch is done with the shared memory
    const typename W::Block blk =
        W::PER_BATCH ? work.template block<K::ROWS>(b, nout, nred) : fixed;
    if (!blk.active) continue;  // the same for every thread of the block
    typename K::Rows rows;
    if constexpr (ReadsArguments<typename K::Rows>::value) rows.bind(args, b);
    Params<F, T, S, K::P_IN_SHARED, K::BLOCK> params;
    params.shared = shared + Terms::SHARED_SCALARS;
    static_for<F::NARGS>([&](auto v) {
      constexpr int V = decltype(v)::value;
      const S* src = arg<F, S>(args, V, b);
      if constexpr (F::CAT[V] == CAT_P) params.template stage<V>(src);
      else if constexpr (F::CAT[V] == CAT_I) rows.template stage<V>(src, blk.row0, blk.row_end);
    });
    typename R::State st[RPT];
    Acc acc[RPT];
    for (int r = 0; r < RPT; ++r) {
      R::init(st[r]);
      R::acc_init(acc[r]);
    }
    if constexpr (HasFirstIndex<R>::value) {
      const int64_t j_first = blk.j_first();
      for (int r = 0; r < RPT; ++r) {
        start_at<R>(st[r], j_first);
        start_at<R>(acc[r], j_first);
      }
    }
    blk.walk([&](int64_t jbeg, int64_t jend) {
      for (int64_t j0 = jbeg; j0 < jend; j0 += Terms::TILE) {
        const int n = (int)(jend - j0 < Terms::TILE ? jend - j0 : Terms::TILE);
        const int64_t after = jend - j0 - n;
        const TermTile tile{j0, n, j0 == jbeg, (int)(after < Terms::TILE ? after : Terms::TILE)};
        Terms::tile(shared, args, b, blk.row0, blk.row_end, nred, tile, rows, params.in(),
                    [&](int r, const T* f, int64_t j) { R::acc_push(acc[r], f, j); });
        if constexpr (R::ACC_PER_TILE) {
          for (int r = 0; r < RPT; ++r) {
            R::acc_fold(st[r], acc[r]);
            R::acc_init(acc[r]);
          }
        }
      }
    });
    for (int r = 0; r < RPT; ++r) {
      if constexpr (!R::ACC_PER_TILE) R::acc_fold(st[r], acc[r]);
      if constexpr (Layout::LANES > 1) {
        merge_lanes<R, Layout::LANES>(st[r]);  // every lane takes part, in range or not
        if (threadIdx.x % Layout::LANES != 0) continue;
      }
      const int64_t i = blk.row0 + Layout::offset(r);
      if (i >= blk.row_end) continue;
      if (partial)
        partial[(b * gridDim.y + blockIdx.y) * nout + i] = st[r];
      else
        write_outputs<R, T, S>(st[r], out, b * nout + i);
    }
  }
}

// The split scheme's second step: one thread per (batch, row) merges its nsplit States in
// order of j (ties keep the smaller index) and writes the outputs. It depends on the
// reduction policy alone, not on the formula: NVRTC builds it once per policy
// (compile/driver.py), beside the formulas' reductions.
template <class R, class T, class S>
__global__ void merge_splits(int64_t nbatch, int64_t nout, int nsplit,
                             const typename R::State* partial, Outputs<S> out) {
  const int64_t total = nbatch * nout;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = t / nout, i = t - b * nout;
    typename R::State st = partial[b * nsplit * nout + i];
    for (int s = 1; s < nsplit; ++s) R::merge(st, partial[(b * nsplit + s) * nout + i]);
    write_outputs<R, T, S>(st, out, t);
  }
}

}  // namespace lk
