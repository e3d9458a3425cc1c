// lk_cuda_mma.cuh: the tensor-core variant of the CUDA kernel, for formulas whose wide
// i-variable X and j-variable Y enter only through scalar products or squared distances
// (lazykeops/compile/tensor_cores.py); one instantiation of the kernel skeleton
// (lk_cuda_kernel.cuh). sm_80 and later.
//
// The generated formula defines TC_MODE (the operands' precision: TF32, float16 or
// bfloat16, accumulated in float32), TC_X / TC_Y (the positions of X and Y), TC_DIST
// (distances: the data are centred on the block's first row and the squared norms kept),
// TC_W (the position of a parameter W weighting the sums componentwise, or -1: the MMA's
// X operand is then W x, and the norms sum W x^2 and sum W y^2), WIDE = D, NCHUNKED sums,
// `tc_parts(acc, xn, floor, part)` (the sums of a pair from its MMA accumulator, which for
// distances starts at -yn / 2, and the row's squared norm: xn - 2 acc = xn + yn - 2 <x, y>,
// at least `floor`) and an `eval` that reads the sums as part<m>().
//
// As in attention kernels, a warp owns MT tiles of 16 rows, whose X stays in registers as
// the MMA's A fragments for the whole batch (staged once through shared memory, centred
// and rounded to the operand type, with the rows' squared norms). The j-variables stream
// through shared memory in tiles of TILE terms, one tile ahead: while the block computes
// on a tile, cp.async copies the next one's raw values; then the block centres and rounds
// its Y (and the terms' squared norms), converts its narrow j-variables, and each warp
// multiplies its rows by it (mma.sync m16n8k8 TF32 or m16n8k16 f16/bf16). The products
// stay where the MMA leaves them: each thread holds 2 rows of each 16-row tile and 2 of
// every 8 terms (FragmentRows), evaluates those pairs and pushes them to its own States;
// the 4 lanes sharing a row merge their States at the end (the skeleton's merge_lanes).
//
// Shared memory is laid out in 32-bit words. Rounded rows (of X while staging, of the
// tile's Y) hold KSTEPS * 8 words (the components, zero-padded to the MMA's K) and 4 more,
// so that the 32 lanes' fragment reads (row lane / 4, word lane % 4, of a k-step) fall on
// 32 distinct banks; the raw rows of Y are padded the same way for the conversion.
#pragma once

#include "lk_std.h"

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

// Tuning knobs (benchmarks/bench_tensor_cores.py --tune): warps per block (at most
// LK_CUDA_BLOCK / 32, the skeleton's launch bound), 16-row MMA tiles per warp, terms per
// tile, and the blocks per SM the registers are budgeted for (0: chosen by MmaConfig).
#ifndef LK_TC_WARPS
#define LK_TC_WARPS 8
#endif
#ifndef LK_TC_MT
#define LK_TC_MT 0
#endif
#ifndef LK_TC_TILE
#define LK_TC_TILE 0
#endif
#ifndef LK_TC_MIN_BLOCKS
#define LK_TC_MIN_BLOCKS 0
#endif

// The rows of a thread: the rows of the MMA accumulator it holds, lane / 4 and lane / 4 + 8
// of each of its warp's MT tiles of 16 rows; the 4 lanes of a quad share them.
template <int MT>
struct FragmentRows {
  static constexpr int LANES = 4;
  __device__ static LK_INLINE int offset(int r) {
    const int lane = threadIdx.x & 31;
    return (int)(threadIdx.x >> 5) * 16 * MT + (r >> 1) * 16 + (r & 1) * 8 + (lane >> 2);
  }
};

// Words of the raw tiles of the narrow j-variables before position `upto` (each rounded up
// to 16 bytes).
template <class F, class S, int TILE>
LK_HD constexpr int raw_narrow_words(int upto) {
  int w = 0;
  for (int v = 0; v < upto; ++v)
    if (F::CAT[v] == CAT_J && !is_wide<F>(v))
      w += (TILE * F::DIM[v] * (int)sizeof(S) + 15) / 16 * 4;
  return w;
}

template <class F, class R, class T, class S>
struct MmaConfig {
  static_assert(std::is_same<T, float>::value, "tensor cores compute in float");
  using Op = MmaOperand<F::TC_MODE>;
  static constexpr int D = F::WIDE;
  static constexpr int KSTEPS = (D + Op::K - 1) / Op::K;
  static constexpr int WORDS = KSTEPS * 8;   // words of a row the MMAs read
  static constexpr int WARPS = LK_TC_WARPS * 32 <= LK_CUDA_BLOCK ? LK_TC_WARPS : LK_CUDA_BLOCK / 32;
  static constexpr int BLOCK = WARPS * 32;
  // Reduction states of more than 16 words (ArgKMin's lists) take the registers the
  // fragment epilogue needs (two rows' lists of K = 10 per thread spilled on sm_90): their
  // products go through shared memory to a thread per row instead (ROW_EPILOGUE), from
  // warps of 32 rows.
  static constexpr int ACC_WORDS = (int)(sizeof(typename R::template Acc<float>) / 4);
  static constexpr bool ROW_EPILOGUE = ACC_WORDS > 16;
  // Rows of up to 64 words: 32 rows per warp (their A fragments: 64 registers at most);
  // wider rows, 16. Registers budgeted for 2 blocks per SM (128 per thread), but for the
  // row epilogue of wider rows (0: ptxas's own budget). On the H200
  // (bench_tensor_cores.py --tune), k-means and Gaussian conv at D = 64 (TF32 and f16)
  // and D = 128 (f16), and kNN at D = 128 (f16) took 0.75-0.9x the time of 16 rows per
  // warp; a Gaussian conv at D = 128 (TF32) with 130 registers (1 block) 1.6x the time of
  // 128; kNN at D = 128 (TF32) spilled within 128 registers, 1.4x the time.
  static constexpr bool NARROW_ROWS = WORDS <= 64;
  static constexpr int MT = ROW_EPILOGUE ? 2 : LK_TC_MT > 0 ? LK_TC_MT : NARROW_ROWS ? 2 : 1;
  static constexpr int ROWS = WARPS * 16 * MT;
  static constexpr int RPT = ROW_EPILOGUE ? 1 : 2 * MT;
  using Layout = std::conditional_t<ROW_EPILOGUE, StridedRows<BLOCK>, FragmentRows<MT>>;
  static constexpr int MIN_BLOCKS =
      LK_TC_MIN_BLOCKS > 0 ? LK_TC_MIN_BLOCKS : ROW_EPILOGUE && !NARROW_ROWS ? 0 : 2;
  static constexpr int STRIDE = WORDS + 4;   // words between rounded rows (bank spread)
  static constexpr int RAW_STRIDE = ((D * (int)sizeof(S) + 15) / 16 + 1) * 16;  // bytes
  // The warps multiply their rows by SUB terms at a time (NT 8-column MMA tiles: 4 x MT
  // accumulator fragments in registers) and evaluate those pairs before the next SUB.
  // A tile (the terms between two barriers) holds several: each tile costs the block two
  // barriers, the conversion of its Y and the copy of the next, which 32 terms per tile
  // did not pay for (H200: a D = 3 Gaussian sum on 32-term tiles ran at a quarter of the
  // CUDA cores' speed, whatever the MMA's share). Tiles of up to 128 terms, their Y and narrow
  // j-variables within the memory that stages X (or 40 KB); 16 terms for the row epilogue,
  // whose thread per row reads a tile's products from shared memory (H200, kNN K = 10 at
  // D = 128: 0.92x the time of 32 terms in TF32, 0.88x in float16).
  static constexpr int SUB = !ROW_EPILOGUE ? 32 : LK_TC_TILE > 0 ? LK_TC_TILE : 16;
  static constexpr int NT = SUB / 8;
  static constexpr int DJN = narrow_offset<F>(CAT_J, F::NARGS);
  static constexpr int DJNP = (DJN + 3) / 4 * 4;
  // A term's bytes in a tile: Y rounded and raw, the narrow j-variables converted and raw.
  static constexpr int TERM_BYTES = STRIDE * 4 + RAW_STRIDE + DJNP * 4 + DJN * (int)sizeof(S);
  static constexpr int TILE_BYTES = ROWS * STRIDE * 4 > 40 * 1024 ? ROWS * STRIDE * 4 : 40 * 1024;
  static constexpr int TILE = ROW_EPILOGUE ? SUB
                              : LK_TC_TILE > 0 ? LK_TC_TILE
                              : 128 * TERM_BYTES <= TILE_BYTES ? 128
                              : 64 * TERM_BYTES <= TILE_BYTES ? 64 : SUB;
  // Threads per row when rounding the tile's Y and the block's X (their norms: shuffles).
  static constexpr int Y_LANES = BLOCK / TILE;
  static constexpr int X_LANES = BLOCK >= ROWS ? BLOCK / ROWS : 1;
  static_assert(TILE % SUB == 0 && BLOCK % TILE == 0 && Y_LANES <= 32 &&
                    (Y_LANES & (Y_LANES - 1)) == 0 && (X_LANES & (X_LANES - 1)) == 0,
                "a tile is SUB-term pieces, a power of two of threads per term");
  static constexpr int DP = packed_size<F>(CAT_P);
  static constexpr bool P_IN_SHARED = params_in_shared<F, T>();
  static constexpr int DPS = P_IN_SHARED ? DP : 0;
  // Shared memory, in 32-bit words, in this order: the tile's narrow j-variables (in T),
  // its rounded Y, the raw copy of the next tile (Y, then each narrow j-variable) - the
  // block's rounded X in their place while it is staged -, the terms' squared norms, the
  // rows', the centre, the weights, the products (ROW_EPILOGUE); then the parameters.
  static constexpr int OFF_Y = TILE * DJNP;
  static constexpr int OFF_RAW = OFF_Y + TILE * STRIDE;
  static constexpr int OFF_RAW_NARROW = OFF_RAW + TILE * RAW_STRIDE / 4;
  static constexpr int TILE_WORDS = OFF_RAW_NARROW + raw_narrow_words<F, S, TILE>(F::NARGS) - OFF_Y;
  static constexpr int X_WORDS = ROWS * STRIDE;
  static constexpr int OFF_NORMS = OFF_Y + (X_WORDS > TILE_WORDS ? X_WORDS : TILE_WORDS);
  static constexpr int OFF_XNORMS = OFF_NORMS + TILE;
  static constexpr int OFF_CENTRE = OFF_XNORMS + ROWS;
  static constexpr bool WEIGHTED = F::TC_W >= 0;
  static constexpr int OFF_WEIGHTS = OFF_CENTRE + (F::TC_DIST ? D : 0);
  static constexpr int OFF_DOTS = OFF_WEIGHTS + (WEIGHTED ? D : 0);
  static constexpr int DOTS = TILE + 1;  // floats between rows of products (ROW_EPILOGUE)
  static constexpr int WORDS_BEFORE_PARAMS = OFF_DOTS + (ROW_EPILOGUE ? ROWS * DOTS : 0);
  static constexpr size_t SHARED = ((size_t)WORDS_BEFORE_PARAMS + DPS) * sizeof(T);
};

__device__ LK_INLINE uint32_t* shared_words() {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  return reinterpret_cast<uint32_t*>(shared_raw);
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

// The components of a rounded word, as floats.
template <class Op>
__device__ LK_INLINE void word_values(uint32_t word, float* v) {
  if constexpr (Op::PER_WORD == 1) {
    v[0] = __uint_as_float(word);
  } else {
    using H2 = typename Op::H2;
    const H2 pair = *reinterpret_cast<const H2*>(&word);
    v[0] = to_compute(pair.x);
    v[1] = to_compute(pair.y);
  }
}

// Unweighted sums: every component's weight is 1 (the products by it fold away).
struct NoWeights {
  __device__ LK_INLINE float operator()(int) const { return 1.f; }
};

// The sum of the weighted squares of the components of word w of a row (weight(k): the
// weight of component k), and with SCALED, the word replaced by the weighted components,
// rounded again (the MMA's X operand of a weighted sum).
template <class Op, bool SCALED, class Weight>
__device__ LK_INLINE float word_norm(uint32_t& word, int w, Weight weight) {
  float v[Op::PER_WORD];
  word_values<Op>(word, v);
  float norm = 0.f;
  for (int h = 0; h < Op::PER_WORD; ++h) {
    const float weighted = weight(w * Op::PER_WORD + h) * v[h];
    norm = h == 0 ? weighted * v[h] : norm + weighted * v[h];
    v[h] = weighted;
  }
  if constexpr (SCALED) word = Op::round(v);
  return norm;
}

// Rows 0 .. count - 1 rounded to `dst` (rows of STRIDE words; rows past `valid` zeros) and
// their squared norms (of the rounded values, weighted by weight(k): Weight() = 1 for
// unweighted sums) to `norms`; get(r, k) reads component k of row r, centred. With SCALED
// the rows are stored weighted (rounded again). LANES consecutive threads per row, which
// sum the norm by shuffles: with count * LANES a multiple of 32 (or LANES = 1), every
// lane of a warp takes part.
template <class C, int LANES, bool SCALED = false, class Get, class Weight = NoWeights>
__device__ LK_INLINE void round_rows(uint32_t* dst, float* norms, int count, int valid, Get get,
                                     Weight weight = {}) {
  using Op = typename C::Op;
  for (int e = threadIdx.x; e < count * LANES; e += C::BLOCK) {
    const int r = e / LANES, part = e - r * LANES;
    float norm = 0.f;
    for (int w = part; w < C::WORDS; w += LANES) {
      uint32_t word =
          r < valid ? rounded_word<Op, C::D>(w, [&](int k) { return get(r, k); }) : 0u;
      norm += word_norm<Op, SCALED>(word, w, weight);
      dst[r * C::STRIDE + w] = word;
    }
    for (int o = LANES / 2; o > 0; o /= 2) norm += __shfl_xor_sync(0xffffffffu, norm, o);
    if (part == 0) norms[r] = norm;
  }
}

// Asynchronous copies to shared memory (sm_80): complete for the block after
// cp_async_wait() and a __syncthreads().
__device__ LK_INLINE void cp_async_16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(
                   (unsigned)__cvta_generic_to_shared(dst)), "l"(src) : "memory");
}
__device__ LK_INLINE void cp_async_4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(
                   (unsigned)__cvta_generic_to_shared(dst)), "l"(src) : "memory");
}
__device__ LK_INLINE void cp_async_wait() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// `rows` consecutive rows of `row_bytes` bytes from global memory to shared rows
// `dst_stride` bytes apart (16-byte aligned), by the block: in 16- or 4-byte cp.async
// chunks where the source's alignment allows (the same for every thread), byte by byte
// past the last whole chunk of a row and for sources aligned on less (half data of an odd
// width: plain stores, complete at the same point).
template <int BLOCK>
__device__ LK_INLINE void copy_rows(unsigned char* dst, int dst_stride, const unsigned char* src,
                                    int row_bytes, int rows) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(src);
  const bool one = rows == 1;
  const int ch = at % 16 == 0 && (one || row_bytes % 16 == 0) ? 16
                 : at % 4 == 0 && (one || row_bytes % 4 == 0) ? 4 : 1;
  const int chunks = row_bytes / ch, per_row = chunks + (row_bytes - chunks * ch);
  for (int e = threadIdx.x; e < rows * per_row; e += BLOCK) {
    const int r = e / per_row, c = e - r * per_row;
    unsigned char* d = dst + r * dst_stride;
    const unsigned char* s = src + (int64_t)r * row_bytes;
    if (c >= chunks) {
      const int byte = chunks * ch + (c - chunks);
      d[byte] = s[byte];
    } else if (ch == 16) {
      cp_async_16(d + c * 16, s + c * 16);
    } else if (ch == 4) {
      cp_async_4(d + c * 4, s + c * 4);
    } else {
      d[c] = s[c];
    }
  }
}

// The weights of a weighted sum's components (staged in shared memory with the X rows,
// zeros past D), or NoWeights.
template <class C>
__device__ LK_INLINE auto component_weights() {
  if constexpr (C::WEIGHTED) {
    const float* weights = reinterpret_cast<const float*>(shared_words() + C::OFF_WEIGHTS);
    return [weights](int k) { return k < C::D ? weights[k] : 0.f; };
  } else {
    return NoWeights{};
  }
}

// The row source: the narrow i-variables in registers; X as the A fragments of the warp's
// MMA tiles (registers), staged once per batch, and its rows' squared norms.
template <class F, class C, class T, class S>
struct MmaRows {
  RegisterRows<F, T, S, C::RPT, typename C::Layout, NarrowArgs> narrow;
  uint32_t a[C::MT][C::KSTEPS][4];
  float xn[C::RPT];
  const S* weights = nullptr;  // TC_W's components, for a weighted sum
  // The least distance (tc_parts): 0, but -inf for a weighted one with negative weights.
  float floor = 0.f;

  __device__ LK_INLINE void bind(const ArgTable<F>& args, int64_t b) {
    if constexpr (C::WEIGHTED) weights = arg<F, S>(args, F::TC_W, b);
  }

  template <int V>
  __device__ LK_INLINE void stage(const S* src, int64_t row0, int64_t row_end) {
    if constexpr (V == F::TC_X) {
      uint32_t* words = shared_words();
      uint32_t* xs = words + C::OFF_Y;
      float* norms = reinterpret_cast<float*>(words + C::OFF_XNORMS);
      float* c = reinterpret_cast<float*>(words + C::OFF_CENTRE);
      if constexpr (F::TC_DIST)
        for (int k = threadIdx.x; k < C::D; k += C::BLOCK) c[k] = to_compute(src[row0 * C::D + k]);
      if constexpr (C::WEIGHTED) {  // kept for the block's tiles, which weigh the terms' norms
        bool negative = false;
        for (int k = threadIdx.x; k < C::D; k += C::BLOCK) {
          const float w = to_compute(weights[k]);
          reinterpret_cast<float*>(words + C::OFF_WEIGHTS)[k] = w;
          negative = negative || w < 0.f;
        }
        if (__syncthreads_or(negative)) floor = -inf<float>();
      } else if constexpr (F::TC_DIST) {
        __syncthreads();
      }
      round_rows<C, C::X_LANES, C::WEIGHTED>(xs, norms, C::ROWS, C::ROWS, [&](int r, int k) {
        const float v = to_compute(src[clamp_row(row0 + r, row_end) * C::D + k]);
        return F::TC_DIST ? v - c[k] : v;
      }, component_weights<C>());
      __syncthreads();
      const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
      const int first = (int)(threadIdx.x >> 5) * 16 * C::MT;
      LK_UNROLL for (int mt = 0; mt < C::MT; ++mt)
        LK_UNROLL for (int s = 0; s < C::KSTEPS; ++s) {
          const uint32_t* r0 = xs + (first + mt * 16 + g) * C::STRIDE + s * 8 + t;
          const uint32_t* r8 = r0 + 8 * C::STRIDE;
          a[mt][s][0] = r0[0];
          a[mt][s][1] = r8[0];
          a[mt][s][2] = r0[4];
          a[mt][s][3] = r8[4];
        }
      LK_UNROLL for (int r = 0; r < C::RPT; ++r) xn[r] = norms[C::Layout::offset(r)];
      __syncthreads();  // the staging memory is the tiles' from here
    } else {
      narrow.template stage<V>(src, row0, row_end);
    }
  }
  __device__ LK_INLINE auto in(int r) const { return narrow.in(r); }
};

// body(std::false_type()) where `whole` (no term to check against the tile's end), else
// body(std::true_type()): the pieces of whole tiles evaluate their pairs without a branch
// each.
template <class Body>
__device__ LK_INLINE void whole_or_ragged(bool whole, Body body) {
  if (whole)
    body(std::false_type());
  else
    body(std::true_type());
}

template <class F, class C, class T, class S>
struct MmaTerms {
  static constexpr int TILE = C::TILE;
  static constexpr int SHARED_SCALARS = C::WORDS_BEFORE_PARAMS;

  // Starts the copy of terms j0 .. j0 + n - 1 of every j-variable to the raw buffers.
  __device__ static LK_INLINE void fetch(uint32_t* words, const ArgTable<F>& args, int64_t b,
                                         int64_t j0, int n) {
    unsigned char* raw = reinterpret_cast<unsigned char*>(words);
    static_for<F::NARGS>([&](auto v) {
      constexpr int V = decltype(v)::value;
      if constexpr (F::CAT[V] == CAT_J) {
        constexpr int dim = F::DIM[V];
        const auto* src = reinterpret_cast<const unsigned char*>(arg<F, S>(args, V, b) + j0 * dim);
        if constexpr (V == F::TC_Y)
          copy_rows<C::BLOCK>(raw + 4 * C::OFF_RAW, C::RAW_STRIDE, src, dim * (int)sizeof(S), n);
        else if constexpr (!is_wide<F>(V))
          copy_rows<C::BLOCK>(raw + 4 * (C::OFF_RAW_NARROW + raw_narrow_words<F, S, TILE>(V)), 0,
                              src, n * dim * (int)sizeof(S), 1);
      }
    });
  }

  template <class Rows, class P, class Push>
  __device__ static LK_INLINE void tile(T* shared, const ArgTable<F>& args, int64_t b,
                                        int64_t, int64_t, int64_t, const TermTile& t,
                                        const Rows& rows, P params, Push push) {
    using Op = typename C::Op;
    using X = decltype(rows.in(0));
    using Y = Packed<T, NarrowArgs>;
    using In = CudaChunkIn<F, T, X, Y, P, CHUNK>;
    uint32_t* words = reinterpret_cast<uint32_t*>(shared);
    T* ynarrow = shared;
    uint32_t* ys = words + C::OFF_Y;
    float* ynorms = shared + C::OFF_NORMS;
    const float* c = shared + C::OFF_CENTRE;
    // A piece's first tile was not fetched ahead. The raw buffers are free: the last tile
    // converted them before its second barrier.
    if (t.first) fetch(words, args, b, t.j0, t.n);
    cp_async_wait();
    __syncthreads();  // this tile's raw values are in; every warp is done with the last tile
    static_for<F::NARGS>([&](auto v) {
      constexpr int V = decltype(v)::value;
      if constexpr (F::CAT[V] == CAT_J && !is_wide<F>(V)) {
        constexpr int dim = F::DIM[V], off = narrow_offset<F>(CAT_J, V);
        const S* raw = reinterpret_cast<const S*>(words + C::OFF_RAW_NARROW +
                                                  raw_narrow_words<F, S, TILE>(V));
        for (int e = threadIdx.x; e < t.n * dim; e += C::BLOCK) {
          const int jj = e / dim;
          ynarrow[jj * C::DJNP + off + (e - jj * dim)] = to_compute(raw[e]);
        }
      }
    });
    const unsigned char* yraw = reinterpret_cast<const unsigned char*>(words + C::OFF_RAW);
    round_rows<C, C::Y_LANES>(ys, ynorms, TILE, t.n, [&](int jj, int k) {
      const float v = to_compute(reinterpret_cast<const S*>(yraw + jj * C::RAW_STRIDE)[k]);
      return F::TC_DIST ? v - c[k] : v;
    }, component_weights<C>());
    __syncthreads();  // the tile is rounded; its raw buffers are free
    if (t.next > 0) fetch(words, args, b, t.j0 + t.n, t.next);
    const int lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    float acc[C::MT][C::NT][4];
    // The warp's rows times terms s0 .. s0 + SUB - 1, as MT x NT MMA tiles of 16 x 8. For
    // distances the accumulators start at minus half their terms' squared norms (fragment
    // k holds term 2 q + k % 2 of its 8), which saves every pair two additions.
    auto multiply = [&](int s0) {
      LK_UNROLL for (int nt = 0; nt < C::NT; ++nt) {
        float start[2] = {0.f, 0.f};
        if constexpr (F::TC_DIST)
          LK_UNROLL for (int h = 0; h < 2; ++h) start[h] = -0.5f * ynorms[s0 + nt * 8 + 2 * q + h];
        LK_UNROLL for (int mt = 0; mt < C::MT; ++mt)
          LK_UNROLL for (int k = 0; k < 4; ++k) acc[mt][nt][k] = start[k & 1];
      }
      LK_UNROLL for (int s = 0; s < C::KSTEPS; ++s)
        LK_UNROLL for (int nt = 0; nt < C::NT; ++nt) {
          const uint32_t* col = ys + (s0 + nt * 8 + g) * C::STRIDE + s * 8 + q;
          const uint32_t b0 = col[0], b1 = col[4];
          LK_UNROLL for (int mt = 0; mt < C::MT; ++mt) Op::mma(acc[mt][nt], rows.a[mt][s], b0, b1);
        }
    };
    auto pair = [&](int r, int jj, float dot) {
      T part[F::NCHUNKED];
      F::template tc_parts<T>(dot, rows.xn[r], rows.floor, part);
      T f[F::DIMOUT];
      F::template eval<T>(
          In{{rows.in(r), Y{ynarrow + jj * C::DJNP}, params}, nullptr, nullptr, 0, part}, f);
      push(r, f, t.j0 + jj);
    };
    if constexpr (C::ROW_EPILOGUE) {
      multiply(0);
      // The products to the rows' threads through shared memory (read after this
      // barrier; written again after the next tile's first).
      float* dots = shared + C::OFF_DOTS;
      const int first = (int)(threadIdx.x >> 5) * 32;
      LK_UNROLL for (int mt = 0; mt < 2; ++mt)
        LK_UNROLL for (int nt = 0; nt < C::NT; ++nt) {
          float* r0 = dots + (first + mt * 16 + g) * C::DOTS + nt * 8 + 2 * q;
          float* r8 = r0 + 8 * C::DOTS;
          r0[0] = acc[mt][nt][0];
          r0[1] = acc[mt][nt][1];
          r8[0] = acc[mt][nt][2];
          r8[1] = acc[mt][nt][3];
        }
      __syncthreads();
      const float* mine = dots + threadIdx.x * C::DOTS;
      whole_or_ragged(t.n == TILE, [&](auto ragged) {
        LK_UNROLL for (int jj = 0; jj < TILE; ++jj)
          if (!decltype(ragged)::value || jj < t.n) pair(0, jj, mine[jj]);
      });
    } else {
      // The thread's pairs of each piece: terms s0 + 8 * nt + 2 * q and the next, in
      // increasing j, each with the thread's rows (acc[r / 2][.][2 * (r % 2) + .]), which
      // share its reads of the term's narrow j-variables.
      LK_NO_UNROLL for (int s0 = 0; s0 < t.n; s0 += C::SUB) {
        multiply(s0);
        whole_or_ragged(s0 + C::SUB <= t.n, [&](auto ragged) {
          LK_UNROLL for (int nt = 0; nt < C::NT; ++nt)
            LK_UNROLL for (int h = 0; h < 2; ++h) {
              const int jj = s0 + nt * 8 + 2 * q + h;
              if (!decltype(ragged)::value || jj < t.n)
                LK_UNROLL for (int r = 0; r < C::RPT; ++r)
                  pair(r, jj, acc[r >> 1][nt][2 * (r & 1) + h]);
            }
        });
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
