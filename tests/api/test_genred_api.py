"""The public string API: Genred and generic_* for torch and numpy, argument handling and
the errors a user can trigger (all raised before any compile)."""

import numpy as np
import pytest
import torch

import lazykeops.numpy as lknp
import lazykeops.torch as lkt
from lazykeops import LazyKeOpsError
from lazykeops.compile import build

GAUSS = "Exp(-G*SqDist(X,Y)) * B"
GAUSS_ALIASES = ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]


def gauss_dense(g, x, y, b):
    g, x, y, b = (torch.as_tensor(t, dtype=torch.float64) for t in (g, x, y, b))
    return torch.exp(-g * torch.cdist(x, y) ** 2) @ b


def inputs(dtype=torch.float64, n=30, m=20):
    torch.manual_seed(0)
    return (torch.tensor([0.5], dtype=dtype), torch.randn(n, 3, dtype=dtype),
            torch.randn(m, 3, dtype=dtype), torch.randn(m, 2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_generic_sum_torch(dtype):
    g, x, y, b = inputs(dtype)
    conv = lkt.generic_sum(GAUSS, "A = Vi(2)", *GAUSS_ALIASES)
    a = conv(g, x, y, b)
    assert a.dtype == dtype and a.shape == (30, 2)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(a.double(), gauss_dense(g, x, y, b), rtol=tol, atol=tol)


def test_generic_sum_seed_spellings_and_reduction_over_i():
    g, x, y, b = inputs()
    conv = lkt.generic_sum("Exp(-G*SqDist(X,Y)) * B", "A = Vy(2)",
                           "G = Pm(1)", "X = Vy(3)", "Y = Vx(3)", "B = Vx(2)")
    # X is j-indexed, Y and B i-indexed: the output is indexed by j, summed over i.
    bx = torch.randn(30, 2, dtype=torch.float64)
    a = conv(g, y, x, bx)
    torch.testing.assert_close(a, gauss_dense(g, y, x, bx))


def test_seed_import_lines():
    from lazykeops.torch.generic_logsumexp import generic_logsumexp
    from lazykeops.torch.generic_sum import generic_sum

    assert callable(generic_sum) and callable(generic_logsumexp)
    assert lkt.generic_sum is generic_sum  # the package attribute is the function


def test_generic_logsumexp_argmin_argkmin():
    g, x, y, b = inputs()
    lse = lkt.generic_logsumexp("-G*SqDist(X,Y)", "A = Vi(1)", "G = Pm(1)", "X = Vi(3)",
                                "Y = Vj(3)")
    torch.testing.assert_close(lse(g, x, y),
                               torch.logsumexp(-g * torch.cdist(x, y) ** 2, 1, keepdim=True))
    amin = lkt.generic_argmin("SqDist(X,Y)", "A = Vi(1)", "X = Vi(3)", "Y = Vj(3)")
    assert torch.equal(amin(x, y)[:, 0], torch.cdist(x, y).argmin(1))
    knn = lkt.generic_argkmin("SqDist(X,Y)", "A = Vi(4)", "X = Vi(3)", "Y = Vj(3)", opt_arg=4)
    assert torch.equal(knn(x, y), torch.cdist(x, y).topk(4, 1, largest=False).indices)
    # As pykeops: K comes from the output alias when opt_arg is not given.
    knn3 = lkt.generic_argkmin("SqDist(X,Y)", "A = Vi(3)", "X = Vi(3)", "Y = Vj(3)")
    assert torch.equal(knn3(x, y), torch.cdist(x, y).topk(3, 1, largest=False).indices)
    knn_np = lknp.generic_argkmin("SqDist(X,Y)", "A = Vj(2)", "X = Vi(3)", "Y = Vj(3)")
    assert np.array_equal(knn_np(x.numpy(), y.numpy()),
                          torch.cdist(y, x).topk(2, 1, largest=False).indices.numpy())


def test_numpy_backend():
    g, x, y, b = (t.numpy() for t in inputs())
    conv = lknp.Genred(GAUSS, GAUSS_ALIASES, axis=1)
    a = conv(g, x, y, b)
    assert isinstance(a, np.ndarray) and a.dtype == np.float64
    np.testing.assert_allclose(a, gauss_dense(g, x, y, b).numpy(), rtol=1e-12)
    knn = lknp.generic_argkmin("SqDist(X,Y)", "A = Vi(2)", "X = Vi(3)", "Y = Vj(3)", opt_arg=2)
    assert knn(x, y).dtype == np.int64


def test_non_contiguous_inputs_and_scalar_parameters():
    g, x, y, b = inputs()
    conv = lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1)
    xt = torch.randn(3, 30, dtype=torch.float64).T  # non-contiguous
    bt = torch.randn(2, 20, dtype=torch.float64).T
    want = gauss_dense(g, xt, y, bt)
    for param in (0.5, [0.5], torch.tensor(0.5, dtype=torch.float64), g):
        torch.testing.assert_close(conv(param, xt, y, bt), want)


def test_batch_dimensions_broadcast():
    g, x, y, b = inputs()
    xb = torch.randn(4, 30, 3, dtype=torch.float64)
    bb = torch.randn(4, 20, 2, dtype=torch.float64)
    conv = lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1)
    a = conv(g, xb, y, bb)  # y shared by the 4 batches
    assert a.shape == (4, 30, 2)
    for k in range(4):
        torch.testing.assert_close(a[k], gauss_dense(g, xb[k], y, bb[k]))


def test_out_argument_is_filled():
    g, x, y, b = inputs()
    out = torch.empty(30, 2, dtype=torch.float64)
    res = lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1)(g, x, y, b, out=out)
    assert res is out
    torch.testing.assert_close(out, gauss_dense(g, x, y, b))


# --------------------------------------------------------------------------- errors
def _no_compile(fn):
    """Run fn, which must raise LazyKeOpsError without compiling anything."""
    before = build.stats["builds"]
    with pytest.raises(LazyKeOpsError) as info:
        fn()
    assert build.stats["builds"] == before
    return str(info.value)


def test_wrong_number_of_arguments():
    g, x, y, b = inputs()
    msg = _no_compile(lambda: lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1)(g, x, y))
    assert GAUSS in msg and "4 arguments" in msg


def test_wrong_dimension():
    g, x, y, b = inputs()
    msg = _no_compile(lambda: lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1)(
        g, torch.randn(30, 4, dtype=torch.float64), y, b))
    assert "X" in msg and "(30, 4)" in msg


def test_i_variables_with_different_sizes():
    msg = _no_compile(lambda: lkt.Genred("X + Z", ["X = Vi(1)", "Z = Vi(1)", "Y = Vj(1)"],
                                         axis=1)(torch.zeros(5, 1), torch.zeros(6, 1),
                                                 torch.zeros(3, 1)))
    assert "X" in msg and "Z" in msg and "5" in msg and "6" in msg


def test_mixed_dtypes():
    g, x, y, b = inputs()
    msg = _no_compile(lambda: lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1)(g, x.float(), y, b))
    assert "dtype" in msg and GAUSS in msg


def test_unsupported_dtype_and_non_array():
    g, x, y, b = inputs()
    conv = lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1)
    assert "int64" in _no_compile(lambda: conv(g.long(), x.long(), y.long(), b.long()))
    assert "X" in _no_compile(lambda: conv(g, [1.0, 2.0, 3.0], y, b))


@pytest.mark.parametrize("kwargs, word", [
    ({"reduction_op": "Median"}, "Median"),
    ({"axis": 2}, "axis"),
    ({"reduction_op": "ArgKMin"}, "K"),
    ({"reduction_op": "ArgKMin", "opt_arg": 0}, "K"),
    ({"sum_scheme": "fast"}, "sum_scheme"),
    ({"dtype_acc": "float16"}, "dtype_acc"),
    ({"reduction_op": "SumSoftMaxWeight"}, "formula2"),
])
def test_bad_options(kwargs, word):
    msg = _no_compile(lambda: lkt.Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], **kwargs))
    assert word in msg


def test_k_larger_than_the_reduced_axis():
    msg = _no_compile(lambda: lkt.Genred("SqDist(X,Y)", ["X = Vi(1)", "Y = Vj(1)"],
                                         reduction_op="KMin", axis=1, opt_arg=5)(
        torch.zeros(3, 1), torch.zeros(4, 1)))
    assert "K=5" in msg


@pytest.mark.parametrize("backend, words", [("GPU", ("backend", "cpu")),
                                             ("GPU_2D", ("GPU_2D",)), ("TPU", ("TPU",))])
def test_backend_that_does_not_fit_the_data_is_refused_clearly(backend, words):
    g, x, y, b = inputs()
    msg = _no_compile(lambda: lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1)(g, x, y, b,
                                                                       backend=backend))
    assert all(w in msg for w in words)


def test_output_alias_dimension_must_match():
    msg = _no_compile(lambda: lkt.generic_sum(GAUSS, "A = Vi(3)", *GAUSS_ALIASES))
    assert "dim 3" in msg and "dim 2" in msg


def test_formula_without_i_variable():
    msg = _no_compile(lambda: lkt.Genred("Y", ["Y = Vj(1)"], axis=1))
    assert "i-indexed" in msg


@pytest.mark.parametrize("formula, kwargs", [
    ("X * Zero(100000)", {}),
    ("SqDist(X,Y)", {"reduction_op": "KMin", "opt_arg": 20000}),
])
def test_formulas_too_large_for_the_engine_are_refused(formula, kwargs):
    msg = _no_compile(lambda: lkt.Genred(formula, ["X = Vi(1)", "Y = Vj(1)"], axis=1,
                                         **kwargs))
    assert "too large" in msg and formula in msg


@pytest.mark.parametrize("setting, nvrtc_found, nvcc_found, expected", [
    ("auto", False, False, "no CUDA compiler was found: neither libnvrtc .* nor nvcc"),
    ("nvrtc", False, True, "LAZYKEOPS_CUDA_COMPILER=nvrtc, but no libnvrtc"),
    ("nvcc", True, False, "LAZYKEOPS_CUDA_COMPILER=nvcc, but no nvcc"),
])
def test_cuda_arrays_without_the_compiler_are_a_clear_error(monkeypatch, setting, nvrtc_found,
                                                             nvcc_found, expected):
    from lazykeops.compile import build, nvrtc

    monkeypatch.setenv("LAZYKEOPS_CUDA_COMPILER", setting)
    monkeypatch.setattr(nvrtc, "available", lambda: nvrtc_found)
    monkeypatch.setattr(build, "nvcc_available", lambda: nvcc_found)
    routine = lkt.Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], axis=1)
    with pytest.raises(LazyKeOpsError, match=expected):
        routine.core.check_device("cuda:0")


@pytest.mark.parametrize("setting, nvrtc_found, nvcc_found, expected", [
    ("auto", True, True, "nvrtc"), ("auto", False, True, "nvcc"), ("nvcc", True, True, "nvcc"),
    ("nvrtc", True, False, "nvrtc"),
])
def test_the_cuda_compiler_follows_the_setting(monkeypatch, setting, nvrtc_found, nvcc_found,
                                               expected):
    from lazykeops.compile import build, nvrtc

    monkeypatch.setenv("LAZYKEOPS_CUDA_COMPILER", setting)
    monkeypatch.setattr(nvrtc, "available", lambda: nvrtc_found)
    monkeypatch.setattr(build, "nvcc_available", lambda: nvcc_found)
    assert nvrtc.compiler() == expected
    monkeypatch.setenv("LAZYKEOPS_CUDA_COMPILER", "clang")
    with pytest.raises(LazyKeOpsError, match="LAZYKEOPS_CUDA_COMPILER must be one of"):
        nvrtc.compiler()


def test_arrays_on_another_device_kind_are_a_clear_error():
    routine = lkt.Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], axis=1)
    with pytest.raises(LazyKeOpsError, match="CUDA GPUs"):
        routine.core.check_device("mps")
