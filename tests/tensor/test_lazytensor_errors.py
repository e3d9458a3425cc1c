"""Errors a LazyTensor user can trigger: each is a lazykeops.LazyKeOpsError raised before
anything compiles (lazykeops.compile.build.stats["builds"] does not move), and its message
names the shapes involved."""

import pytest
import torch

import lazykeops
import lazykeops.numpy as lknp
import lazykeops.torch as lkt
from lazy_helpers import D, M, N, no_compile, normal, uniform


def xy(be):
    return be.arr(uniform(N, D)), be.arr(uniform(M, D))


def test_lazykeops_error_is_a_value_error():
    assert issubclass(lazykeops.LazyKeOpsError, ValueError)


# ------------------------------------------------------------------- sizes and shapes
def test_two_i_variables_with_different_n(be):
    x, y = xy(be)
    X, Z = be.Vi(x), be.Vi(x[:3])
    no_compile(lambda: X + Z, str((N, 1, D)), str((3, 1, D)), "N")
    no_compile(lambda: ((X - be.Vj(y)).sqnorm2() * Z[0]).sum(dim=1), str((3, 1)))


def test_two_j_variables_with_different_m(be):
    x, y = xy(be)
    no_compile(lambda: be.Vj(y) * be.Vj(y[:2]), str((1, M, D)), str((1, 2, D)), "M")


def test_non_broadcastable_batch_dims(be):
    x = be.arr(uniform(2, N, 1, D))
    y = be.arr(uniform(3, 1, M, D))
    no_compile(lambda: be.LazyTensor(x) - be.LazyTensor(y), str((2, N, 1, D)),
               str((3, 1, M, D)), "batch")
    p = be.arr(uniform(4, 1, 1, 1))
    no_compile(lambda: be.LazyTensor(x) * be.LazyTensor(p), "batch")


def test_inner_dimension_mismatch(be):
    x, y = xy(be)
    no_compile(lambda: be.Vi(x) + be.Vj(y[:, :2]), str((N, 1, D)), str((1, M, 2)))
    no_compile(lambda: be.Vi(x).sqdist(be.Vj(y[:, :2])), str((N, 1, D)))
    no_compile(lambda: be.Vi(x) | be.Vj(y[:, :2]), str((N, 1, D)))
    no_compile(lambda: be.Vi(x).weightedsqnorm(be.Pm(be.arr(uniform(2)))), "dim")


def test_mixed_dtypes(be):
    x, y = xy(be)
    msg = no_compile(lambda: be.Vi(be.arr(uniform(N, D), torch.float32)) - be.Vj(y),
                     str((N, 1, D)), str((1, M, D)))
    assert "float32" in msg and "float64" in msg


def test_mixed_frameworks():
    x = uniform(N, D)
    no_compile(lambda: lkt.LazyTensor(x.numpy()[:, None, :]), "numpy")
    no_compile(lambda: lknp.LazyTensor(x[:, None, :]), "torch")
    no_compile(lambda: lkt.Vi(x) - lknp.Vj(x.numpy()), "torch", "numpy")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_mixed_devices():
    x = uniform(N, D)
    no_compile(lambda: lkt.Vi(x) - lkt.Vj(x.cuda()), "cpu", "cuda")


# ------------------------------------------------------------------- construction
def test_bad_constructor_arguments(be):
    x, y = xy(be)
    no_compile(lambda: be.LazyTensor(x), "axis", str((N, D)))          # 2-D without axis
    no_compile(lambda: be.LazyTensor(x, axis=2), "axis")
    no_compile(lambda: be.LazyTensor(be.arr(uniform(N, M, D))), str((N, M, D)))
    no_compile(lambda: be.LazyTensor(be.Vi(x)), "LazyTensor")
    no_compile(lambda: be.LazyTensor(True))
    no_compile(lambda: be.LazyTensor("x"), "str")
    no_compile(lambda: be.LazyTensor([]), "empty")
    no_compile(lambda: be.Vi(-1, 3), "-1")
    no_compile(lambda: be.Vj(0, 0))


# ------------------------------------------------------------------- reductions
def test_reduction_over_a_dim_that_does_not_exist(be):
    x, y = xy(be)
    K = be.Vi(x).sqdist(be.Vj(y))
    for bad in (3, 5, -4, -7):
        no_compile(lambda: K.sum(dim=bad), f"dim={bad}", str((N, M)))
    no_compile(lambda: K.logsumexp(dim=2), "dim=2")
    no_compile(lambda: K.argKmin(2, dim=2), "dim=2")
    no_compile(lambda: K.min_argmin(axis=4), "dim=4")
    no_compile(lambda: K.logsumexp(), "dim")                            # dim is required
    no_compile(lambda: K.sum(dim="1"), "'1'")


def test_reduction_dims_are_shifted_by_batch_dims(be):
    x = be.arr(uniform(2, 3, N, 1, D))
    y = be.arr(uniform(M, D))
    K = be.LazyTensor(x).sqdist(be.Vj(y))
    for bad in (0, 1, 5):
        no_compile(lambda: K.sum(dim=bad), f"dim={bad}", "dim=2", "dim=3", str((2, 3, N, M)))


def test_bad_reduction_options(be):
    x, y = xy(be)
    K = be.Vi(x).sqdist(be.Vj(y))
    no_compile(lambda: K.sum(dim=1, bogus=1), "bogus")
    # The backend must agree with where the data is.
    no_compile(lambda: K.sum(dim=1, backend="CPU" if be.name == "cuda" else "GPU"), "backend")
    no_compile(lambda: K.sum(dim=1, dtype_acc="float16"), "dtype_acc")
    no_compile(lambda: K.sum(dim=1, sum_scheme="fast"), "sum_scheme")
    no_compile(lambda: K.Kmin(M + 1, dim=1), f"K={M + 1}")
    no_compile(lambda: K.argKmin(0, dim=1), "K")
    no_compile(lambda: (be.LazyTensor(2.0) * 3).sum(dim=1), "Python numbers")


def test_indexing_errors(be):
    x, y = xy(be)
    Z = be.Vi(x) - be.Vj(y)
    no_compile(lambda: Z[D], "index")
    no_compile(lambda: Z.elem(D), "index")
    no_compile(lambda: Z.extract(2, 2), "Extract")
    no_compile(lambda: Z[::2], "slice")
    no_compile(lambda: Z[2:1], "empty")
    no_compile(lambda: Z[0, 1], "slice")
    no_compile(lambda: Z.one_hot(4), "OneHot")
    no_compile(lambda: Z.norm(dim=0), "dim=0")
    no_compile(lambda: be.LazyTensor.cat([Z, Z], dim=0), "dim=0")
    no_compile(lambda: be.LazyTensor.cat([]), "cat")


# ------------------------------------------------------------------- K @ v
def test_matmul_on_a_vector_valued_lazytensor(be):
    x, y = xy(be)
    Z = be.Vi(x) - be.Vj(y)
    no_compile(lambda: Z @ be.arr(normal(M, 2)), str((N, M, D)), "last dim")


def test_matmul_on_a_vector_valued_lazytensor_names_both_shapes(be):
    x, y = xy(be)
    Z = be.Vi(x) - be.Vj(y)
    no_compile(lambda: Z @ be.arr(normal(M, 2)), str((N, M, D)), str((M, 2)))


def test_matmul_with_the_wrong_m_or_not_an_array(be):
    x, y = xy(be)
    K = be.Vi(x).sqdist(be.Vj(y))
    no_compile(lambda: K @ be.arr(normal(M + 1)), str((N, M)), str((M + 1,)))
    no_compile(lambda: K @ be.arr(normal(M + 1, 2)), str((N, M)), str((M + 1, 2)))
    no_compile(lambda: K @ ([1.0] * M), "list")
    no_compile(lambda: K @ be.arr(torch.tensor(1.0, dtype=torch.float64)), "()")
    no_compile(lambda: K @ be.arr(normal(M), torch.float32), "float32")


# ------------------------------------------------------------------- library bugs
@pytest.mark.parametrize("reduction", ["logsumexp", "sumsoftmaxweight"])
def test_weight_with_a_different_m(be, reduction):
    x, y = xy(be)
    S = be.Vi(x) | be.Vj(y)
    W = be.Vj(be.arr(uniform(M + 1, 2)))   # longer, not shorter: no out-of-bounds read
    if reduction == "logsumexp":
        no_compile(lambda: S.logsumexp(dim=1, weight=W), str((1, M + 1, 2)))
    else:
        no_compile(lambda: S.sumsoftmaxweight(W, dim=1), str((1, M + 1, 2)))


def test_weight_with_another_dtype(be):
    x, y = xy(be)
    f32 = torch.float32
    S = be.Vi(be.arr(uniform(N, D), f32)) | be.Vj(be.arr(uniform(M, D), f32))
    W = be.Vj(be.arr(uniform(M, 2)))       # float64 under float32: no out-of-bounds read
    no_compile(lambda: S.logsumexp(dim=1, weight=W), "float64")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_unsupported_dtype(be, dtype):
    x = be.arr(torch.ones(N, D), dtype)
    y = be.arr(torch.ones(M, D), dtype)
    no_compile(lambda: (be.Vi(x) - be.Vj(y)).sum(dim=1), str(dtype).replace("torch.", ""))
