// lk_cuda_mma.cuh: the tensor-core variant of the CUDA kernel, for formulas whose wide
// i-variable X and j-variable Y enter only through scalar products or squared distances
// (lazykeops/compile/tensor_cores.py); one instantiation of the kernel skeleton
// (lk_cuda_kernel.cuh). sm_80 and later.
//
// The generated formula defines TC_MODE (the operands' precision: TF32, float16 or
// bfloat16, accumulated in float32), TC_X / TC_Y (the positions of X and Y), TC_DIST
// (distances: the data are centred on the block's first row and the squared norms kept),
// WIDE = D, NCHUNKED sums, `tc_parts(dot, xn, yn, part)` (the sums of a pair from its
// scalar product and norms) and an `eval` that reads the sums as part<m>().
//
// A thread owns one row; a warp owns 32 rows. Once per batch, each thread writes its row
// of X (centred, rounded to the operand type) to shared memory and keeps its squared norm.
// For each tile of TILE terms, the block writes the tile's Y (centred, rounded) and its
// narrow j-variables to shared memory and computes the terms' squared norms; each warp
// multiplies its 32 rows by the tile (mma.sync m16n8k8 TF32 or m16n8k16 f16/bf16) into
// 32 x TILE float32 scalar products, which go through the warp's part of shared memory
// to the rows' threads; each thread then evaluates its row's TILE terms and pushes them
// to the reduction as the other variants do.
//
// Shared memory is laid out in 32-bit words. Rows of X and Y hold KSTEPS * 8 words (the
// components, zero-padded to the MMA's K) and 4 more, so that the 32 lanes' fragment
// reads (row lane / 4, word lane % 4, of a k-step) fall on 32 distinct banks; the rows of
// scalar products hold TILE + 1 floats, so that a thread reading its own row does too.
#pragma once

#include <cstdint>
#include <type_traits>

#include "lk_cuda_kernel.cuh"

namespace lk {

template <class F, class = void>
struct IsTensorCore : std::false_type {};
template <class F>
struct IsTensorCore<F, std::void_t<decltype(F::TC_MODE)>> : std::true_type {};

enum { TC_TF32 = 1, TC_F16 = 2, TC_BF16 = 3 };

// One operand type: components per 32-bit word, the rounding of floats to it (as a word),
// and the MMA of a 16 x 8 tile.
template <int MODE>
struct MmaOperand;

template <>
struct MmaOperand<TC_TF32> {
  static constexpr int PER_WORD = 1, K = 8;
  __device__ static LK_INLINE uint32_t round(const float* v) {
    uint32_t w;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(w) : "f"(v[0]));
    return w;
  }
  __device__ static LK_INLINE void mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <int MODE>
struct HalfOperand {
  static constexpr int PER_WORD = 2, K = 16;
  using H = std::conditional_t<MODE == TC_F16, __half, __nv_bfloat16>;
  using H2 = std::conditional_t<MODE == TC_F16, __half2, __nv_bfloat162>;
  // Two components in one word, the first in the low half (the MMA's order).
  __device__ static LK_INLINE uint32_t round(const float* v) {
    const H lo = to_storage<H>(v[0]), hi = to_storage<H>(v[1]);
    H2 pair;
    pair.x = lo;
    pair.y = hi;
    return *reinterpret_cast<uint32_t*>(&pair);
  }
  __device__ static LK_INLINE void mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    if constexpr (MODE == TC_F16)
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
          "{%8,%9}, {%0,%1,%2,%3};"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
          "{%8,%9}, {%0,%1,%2,%3};"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <> struct MmaOperand<TC_F16> : HalfOperand<TC_F16> {};
template <> struct MmaOperand<TC_BF16> : HalfOperand<TC_BF16> {};

// Tuning knobs (benchmarks/bench_tensor_cores.py --tune): rows per block (at most
// LK_CUDA_BLOCK, the skeleton's launch bound; 0: 256 for rows of up to 128 words, else
// 128, so that the block's rows fit in shared memory) and terms per tile (8-column MMA
// tiles). On the H200, k-means assignment and Gaussian conv at D = 64 and 128: 256 x 32
// 1.1-1.3x faster than 128 x 32, 64-row blocks and 64-term tiles slower.
#ifndef LK_TC_BLOCK
#define LK_TC_BLOCK 0
#endif
#ifndef LK_TC_TILE
#define LK_TC_TILE 32
#endif

template <class F, class R, class T, class S>
struct MmaConfig {
  static_assert(std::is_same<T, float>::value, "tensor cores compute in float");
  using Op = MmaOperand<F::TC_MODE>;
  static constexpr int D = F::WIDE;
  static constexpr int KSTEPS = (D + Op::K - 1) / Op::K;
  static constexpr int WORDS = KSTEPS * 8;   // words of a row the MMAs read
  static constexpr int ROWS = LK_TC_BLOCK > 0 ? LK_TC_BLOCK : (WORDS <= 128 ? 256 : 128);
  static constexpr int BLOCK = LK_CUDA_BLOCK < ROWS ? LK_CUDA_BLOCK : ROWS;
  static constexpr int RPT = 1;
  static constexpr int TILE = LK_TC_TILE;
  static_assert(BLOCK % 32 == 0 && TILE % 8 == 0 && BLOCK % TILE == 0,
                "a warp owns 32 rows; a tile is 8-column MMA tiles, BLOCK / TILE threads per "
                "term's norm");
  static constexpr int STRIDE = WORDS + 4;   // words between rows (bank spread)
  static constexpr int DOTS = TILE + 1;      // floats between rows of scalar products
  static constexpr int DJN = narrow_offset<F>(CAT_J, F::NARGS);
  static constexpr int DJNP = (DJN + 3) / 4 * 4;
  static constexpr int DP = packed_size<F>(CAT_P);
  static constexpr bool P_IN_SHARED = params_in_shared<F, T>();
  static constexpr int DPS = P_IN_SHARED ? DP : 0;
  // Shared memory, in 32-bit words, in this order: the tile's narrow j-variables, its Y
  // rows, the block's X rows, the scalar products, the tile's squared norms, the centre;
  // then the parameters.
  static constexpr int OFF_Y = TILE * DJNP;
  static constexpr int OFF_X = OFF_Y + TILE * STRIDE;
  static constexpr int OFF_DOTS = OFF_X + BLOCK * STRIDE;
  static constexpr int OFF_NORMS = OFF_DOTS + BLOCK * DOTS;
  static constexpr int OFF_CENTRE = OFF_NORMS + TILE;
  static constexpr int WORDS_BEFORE_PARAMS = OFF_CENTRE + (F::TC_DIST ? D : 0);
  static constexpr size_t SHARED = ((size_t)WORDS_BEFORE_PARAMS + DPS) * sizeof(T);
};

__device__ LK_INLINE uint32_t* shared_words() {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  return reinterpret_cast<uint32_t*>(shared_raw);
}

// Component k of the centre: the block's first row of X (distances), else 0.
template <class F, class S>
__device__ LK_INLINE float centre(const S* x_block_first, int k) {
  if constexpr (F::TC_DIST) return to_compute(x_block_first[k]);
  else return 0.f;
}

// Word w of a row of D components (zeros past D), rounded; `get(k)` reads component k,
// centred.
template <class Op, int D, class Get>
__device__ LK_INLINE uint32_t rounded_word(int w, Get get) {
  float v[Op::PER_WORD];
  for (int h = 0; h < Op::PER_WORD; ++h) {
    const int k = w * Op::PER_WORD + h;
    v[h] = k < D ? get(k) : 0.f;
  }
  return Op::round(v);
}

// The sum of the squares of the components a word holds.
template <class Op>
__device__ LK_INLINE float word_norm(uint32_t word) {
  if constexpr (Op::PER_WORD == 1) {
    const float v = __uint_as_float(word);
    return v * v;
  } else {
    using H2 = typename Op::H2;
    const H2 pair = *reinterpret_cast<const H2*>(&word);
    const float lo = to_compute(pair.x), hi = to_compute(pair.y);
    return lo * lo + hi * hi;
  }
}

// A row of D components, centred and rounded, written as WORDS words; returns the squared
// norm of the rounded values.
template <class Op, int D, int WORDS, class Get>
__device__ LK_INLINE float write_row(uint32_t* dst, Get get) {
  float norm = 0.f;
  for (int w = 0; w < WORDS; ++w) {
    const uint32_t word = rounded_word<Op, D>(w, get);
    dst[w] = word;
    norm += word_norm<Op>(word);
  }
  return norm;
}

// The row source: the narrow i-variables in registers, X in shared memory (written once
// per batch by the row's own thread) and its squared norm.
template <class F, class C, class T, class S>
struct MmaRows {
  RegisterRows<F, T, S, 1, C::BLOCK, NarrowArgs> narrow;
  float xn;

  template <int V>
  __device__ LK_INLINE void stage(const S* src, int64_t first_row, int64_t row_end) {
    if constexpr (V == F::TC_X) {
      const int64_t row0 = first_row - threadIdx.x;
      const S* first = src + row0 * C::D;
      const S* mine = src + clamp_row(first_row, row_end) * C::D;
      uint32_t* words = shared_words();
      if constexpr (F::TC_DIST) {
        float* c = reinterpret_cast<float*>(words + C::OFF_CENTRE);
        for (int k = threadIdx.x; k < C::D; k += C::BLOCK) c[k] = to_compute(first[k]);
      }
      xn = write_row<typename C::Op, C::D, C::WORDS>(
          words + C::OFF_X + threadIdx.x * C::STRIDE,
          [&](int k) { return to_compute(mine[k]) - centre<F>(first, k); });
    } else {
      narrow.template stage<V>(src, first_row, row_end);
    }
  }
  __device__ LK_INLINE auto in(int r) const { return narrow.in(r); }
};

template <class F, class C, class T, class S>
struct MmaTerms {
  static constexpr int TILE = C::TILE;
  static constexpr int SHARED_SCALARS = C::WORDS_BEFORE_PARAMS;

  template <class Rows, class P, class Push>
  __device__ static LK_INLINE void tile(T* shared, const ArgTable<F>& args, int64_t b,
                                        int64_t, int64_t, int64_t nred, int64_t j0, int n,
                                        const Rows& rows, P params, Push push) {
    using Op = typename C::Op;
    using X = decltype(rows.in(0));
    using Y = Packed<T, NarrowArgs>;
    using In = CudaChunkIn<F, T, X, Y, P, CHUNK>;
    uint32_t* words = reinterpret_cast<uint32_t*>(shared);
    T* ynarrow = shared;
    uint32_t* ys = words + C::OFF_Y;
    const uint32_t* xs = words + C::OFF_X;
    float* dots = shared + C::OFF_DOTS;
    float* ynorms = shared + C::OFF_NORMS;
    const float* c = shared + C::OFF_CENTRE;
    __syncthreads();  // the previous tile is done with the terms' memory
    stage_narrow_terms<F, S, C::BLOCK, C::DJNP>(ynarrow, args, b, j0, n);
    // The tile's Y, word by word (consecutive threads, consecutive components); terms
    // past n are zeros.
    const S* y = arg<F, S>(args, F::TC_Y, b);
    for (int e = threadIdx.x; e < TILE * C::WORDS; e += C::BLOCK) {
      const int jj = e / C::WORDS, w = e - jj * C::WORDS;
      const S* row = y + (j0 + jj) * C::D;
      ys[jj * C::STRIDE + w] = rounded_word<Op, C::D>(w, [&](int k) {
        return jj < n ? to_compute(row[k]) - (F::TC_DIST ? c[k] : 0.f) : 0.f;
      });
    }
    __syncthreads();
    if constexpr (F::TC_DIST) {
      // The terms' squared norms, BLOCK / TILE consecutive threads per term.
      constexpr int LANES = C::BLOCK / TILE;
      const int jj = threadIdx.x / LANES, part = threadIdx.x % LANES;
      float s = 0.f;
      for (int w = part; w < C::WORDS; w += LANES) s += word_norm<Op>(ys[jj * C::STRIDE + w]);
      for (int o = LANES / 2; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (part == 0) ynorms[jj] = s;
    }
    // This warp's 32 rows times the tile: two 16-row and four 8-column MMA tiles.
    const int lane = threadIdx.x & 31, warp_row = threadIdx.x - lane;
    const int g = lane >> 2, t = lane & 3;
    float acc[2][TILE / 8][4];
    LK_UNROLL for (int mt = 0; mt < 2; ++mt)
      LK_UNROLL for (int nt = 0; nt < TILE / 8; ++nt)
        LK_UNROLL for (int q = 0; q < 4; ++q) acc[mt][nt][q] = 0.f;
    LK_UNROLL for (int s = 0; s < C::KSTEPS; ++s) {
      const int kw = s * 8 + t;
      uint32_t a[2][4];
      LK_UNROLL for (int mt = 0; mt < 2; ++mt) {
        const uint32_t* r0 = xs + (warp_row + mt * 16 + g) * C::STRIDE + kw;
        const uint32_t* r8 = r0 + 8 * C::STRIDE;
        a[mt][0] = r0[0];
        a[mt][1] = r8[0];
        a[mt][2] = r0[4];
        a[mt][3] = r8[4];
      }
      LK_UNROLL for (int nt = 0; nt < TILE / 8; ++nt) {
        const uint32_t* col = ys + (nt * 8 + g) * C::STRIDE + kw;
        const uint32_t b0 = col[0], b1 = col[4];
        LK_UNROLL for (int mt = 0; mt < 2; ++mt) Op::mma(acc[mt][nt], a[mt], b0, b1);
      }
    }
    LK_UNROLL for (int mt = 0; mt < 2; ++mt)
      LK_UNROLL for (int nt = 0; nt < TILE / 8; ++nt) {
        float* r0 = dots + (warp_row + mt * 16 + g) * C::DOTS + nt * 8 + 2 * t;
        float* r8 = r0 + 8 * C::DOTS;
        r0[0] = acc[mt][nt][0];
        r0[1] = acc[mt][nt][1];
        r8[0] = acc[mt][nt][2];
        r8[1] = acc[mt][nt][3];
      }
    __syncthreads();  // the scalar products of this warp, the norms of every term
    const float* mine = dots + threadIdx.x * C::DOTS;
    LK_UNROLL for (int jj = 0; jj < TILE; ++jj) {
      if (jj < n) {
        T part[F::NCHUNKED];
        F::template tc_parts<T>(mine[jj], rows.xn, F::TC_DIST ? ynorms[jj] : 0.f, part);
        T f[F::DIMOUT];
        F::template eval<T>(
            In{{rows.in(0), Y{ynarrow + jj * C::DJNP}, params}, nullptr, nullptr, 0, part}, f);
        push(0, f, j0 + jj);
      }
    }
  }
};

template <class F, class R, class T, class S>
struct MmaVariant : MmaConfig<F, R, T, S> {
  using C = MmaConfig<F, R, T, S>;
  using Rows = MmaRows<F, C, T, S>;
  using Terms = MmaTerms<F, C, T, S>;
};

}  // namespace lk
