// cuda_compile.cu: the CUDA engine headers compile with nvcc (-c, no GPU needed) for
// hand-written formulas in the shape codegen.py renders: the kernel skeleton (reduce) in
// its tiled variant (registers and global-memory rows) and its chunked variant, and
// merge_splits, over Sum,
// LogSumExp (weighted: what SoftMaxRed is made of), ArgExtremum and KMin policies, in the compute/storage type pairs the code generator uses (float/float,
// double/double, float/__half, float/__nv_bfloat16). No entry macro: the kernels are
// instantiated by taking their addresses, below (the one place naming them), with both
// work sources: dense, and block-sparse (SparseWork; what LK_BLOCK_SPARSE 1 selects).
#define LK_BLOCK_SPARSE 0
#include "lk_cuda_engine.cuh"

namespace {

// Exp(-g SqDist(x_i, y_j)) * b_j: x = Vi(3), y = Vj(3), g = Pm(1), b = Vj(2).
struct Gaussian {
  static constexpr int NARGS = 4;
  static constexpr int CAT[4] = {0, 1, 2, 1};
  static constexpr int DIM[4] = {3, 3, 1, 2};
  static constexpr int DIMOUT = 2;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    T v0[1];
    {
      T s = T(0);
      LK_UNROLL for (int k = 0; k < 3; ++k) {
        s += (in.template var<0>(k) - in.template var<1>(k)) * (in.template var<0>(k) - in.template var<1>(k));
      }
      v0[0] = s;
    }
    T v1[1];
    v1[0] = lk::exp(-(v0[0] * in.template var<2>(0)));
    LK_UNROLL for (int k = 0; k < 2; ++k) out[0 + k] = v1[0] * in.template var<3>(k);
  }
};

// Wide i-variables read from global memory (Vi(200) in double: past LK_CUDA_X_REGISTERS)
// and a parameter too large for shared memory (Pm(4096) in double: past LK_CUDA_P_SHARED),
// both through the global-memory sources (GlobalRows, Params' Pointers): <x_i, y_j> + p_0.
struct WideGlobal {
  static constexpr int NARGS = 3;
  static constexpr int CAT[3] = {0, 1, 2};
  static constexpr int DIM[3] = {200, 200, 4096};
  static constexpr int DIMOUT = 1;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    T s = T(0);
    for (int k = 0; k < 200; ++k) s += in.template var<0>(k) * in.template var<1>(k);
    out[0] = s + in.template var<2>(0);
  }
};

// A chunked formula (WIDE = 200: six chunks of 32 and a tail of 8): Exp(-SqDist(x, y) *
// g) with x = Vi(200), y = Vj(200), g = Pm(1), and a wide parameter p = Pm(200) through
// pvar: part<0> = SqDist, part<1> = sum_k x_k p_k y_k.
struct Chunked {
  static constexpr int NARGS = 4;
  static constexpr int CAT[4] = {0, 1, 2, 2};
  static constexpr int DIM[4] = {200, 200, 1, 200};
  static constexpr int DIMOUT = 1;
  template <class T, class In, class Out>
  LK_HD static LK_INLINE void eval(const In& in, Out out) {
    out[0] = lk::exp(-(in.template part<0>() * in.template var<2>(0))) * in.template part<1>();
  }
  static constexpr int WIDE = 200;
  static constexpr int NCHUNKED = 2;
  template <int L, class T, class In, class Part>
  LK_HD static LK_INLINE void chunk(const In& in, Part part) {
    T s0 = T(0), s1 = T(0);
    LK_UNROLL for (int k = 0; k < L; ++k) {
      const T d = in.template wvar<0>(k) - in.template wvar<1>(k);
      s0 += d * d;
      s1 += in.template wvar<0>(k) * in.template pvar<3>(k) * in.template wvar<1>(k);
    }
    part[0] += s0;
    part[1] += s1;
  }
  template <class T, class In, class Part>
  LK_HD static LK_INLINE void chunk_full(const In& in, Part part) { chunk<32, T>(in, part); }
  template <class T, class In, class Part>
  LK_HD static LK_INLINE void chunk_tail(const In& in, Part part) { chunk<200 % 32, T>(in, part); }
};

static_assert(lk::IsChunked<Chunked>::value && !lk::IsChunked<Gaussian>::value, "WIDE detection");

// The kernels of a variant for (F, R, T, S): the skeleton and the split scheme's merge.
template <class F, class R, class T, class S, class K, class W>
const void* const kernels[] = {(const void*)&lk::reduce<F, R, T, S, K, W>,
                               (const void*)&lk::merge_splits<R, T, S>};

template <class F, class R, class T, class S>
const void* const* const tiles = kernels<F, R, T, S, lk::TiledVariant<F, R, T, S>, lk::DenseWork>;
template <class F, class R, class T, class S>
const void* const* const sparse_tiles =
    kernels<F, R, T, S, lk::TiledVariant<F, R, T, S>, lk::SparseWork>;
template <class F, class R, class T, class S>
const void* const* const chunked =
    kernels<F, R, T, S, lk::ChunkedVariant<F, R, T, S>, lk::DenseWork>;
template <class F, class R, class T, class S>
const void* const* const sparse_chunked =
    kernels<F, R, T, S, lk::ChunkedVariant<F, R, T, S>, lk::SparseWork>;

// The variants the engine picks, with the row source each formula needs.
static_assert(std::is_same_v<lk::Engine<Chunked, lk::SumRed<1, lk::BlockSum>, float, float>::C,
                             lk::ChunkedVariant<Chunked, lk::SumRed<1, lk::BlockSum>, float, float>>,
              "a chunked formula runs the chunked variant");
static_assert(lk::TiledVariant<Gaussian, lk::SumRed<2, lk::BlockSum>, float, float>::X_IN_REGISTERS,
              "Gaussian's rows in registers");
static_assert(std::is_same_v<lk::TiledVariant<WideGlobal, lk::SumRed<1, lk::KahanSum>, double,
                                             double>::Rows,
                             lk::GlobalRows<WideGlobal, double, double, 1,
                                            lk::StridedRows<LK_CUDA_BLOCK>>>,
              "WideGlobal's rows in global memory");

}  // namespace

// Referenced from an exported function, so that nothing is discarded before device code
// generation.
extern "C" int lk_test_kernel_count() {
  using Sum2 = lk::SumRed<2, lk::BlockSum>;
  const void* const* all[] = {
      tiles<Gaussian, Sum2, double, double>,
      tiles<Gaussian, lk::LogSumExpRed<1, 1>, float, __half>,
      tiles<Gaussian, lk::ArgExtremumRed<2, 0, 1, 1>, float, float>,
      tiles<Gaussian, lk::KMinRed<2, 3, 1, 1>, float, __nv_bfloat16>,
      tiles<WideGlobal, lk::SumRed<1, lk::KahanSum>, double, double>,
      chunked<Chunked, lk::SumRed<1, lk::BlockSum>, float, float>,
      chunked<Chunked, lk::KMinRed<1, 3, 0, 1>, float, __half>,
      sparse_tiles<Gaussian, lk::LogSumExpRed<1, 1>, float, float>,
      sparse_tiles<Gaussian, lk::ArgExtremumRed<2, 0, 1, 1>, double, double>,
      sparse_chunked<Chunked, lk::SumRed<1, lk::BlockSum>, float, __nv_bfloat16>,
  };
  int n = 0;
  for (const void* const* pair : all) n += (pair[0] != nullptr) + (pair[1] != nullptr);
  return n;
}
