"""pykeops 2.3's reduction keywords on Genred and generic_*: mapped, accepted without
effect, checked or refused, as runtime/options.py says; every refusal is raised before any
compile. The kernels are the ones of test_genred_api.py (same formulas and dtypes)."""

import warnings

import numpy as np
import pytest
import torch

import lazykeops.numpy as lknp
import lazykeops.torch as lkt
from lazykeops import LazyKeOpsError
from lazykeops.compile import build
from lazykeops.runtime.options import REDUCTION_KEYWORDS, check_device_id, \
    split_reduction_options

GAUSS = "Exp(-G*SqDist(X,Y)) * B"
GAUSS_ALIASES = ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]


def inputs(dtype=torch.float64, n=30, m=20):
    gen = torch.Generator().manual_seed(1)
    return (torch.tensor([0.5], dtype=dtype), torch.randn(n, 3, dtype=dtype, generator=gen),
            torch.randn(m, 3, dtype=dtype, generator=gen),
            torch.randn(m, 2, dtype=dtype, generator=gen))


def dense(g, x, y, b):
    g, x, y, b = (torch.as_tensor(t, dtype=torch.float64) for t in (g, x, y, b))
    return torch.exp(-g * ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)) @ b


def no_compile(fn):
    before = build.stats["builds"]
    with pytest.raises(LazyKeOpsError) as info:
        fn()
    assert build.stats["builds"] == before
    return str(info.value)


def test_every_pykeops_keyword_is_accepted():
    g, x, y, b = inputs(torch.float32)
    with pytest.warns(UserWarning, match="deprecated"):
        conv = lkt.Genred(GAUSS, GAUSS_ALIASES, "Sum", 1, "float32", None, None, "float",
                          use_double_acc=True, sum_scheme="auto", enable_chunks=False,
                          rec_multVar_highdim=True, use_fast_math=False)
    assert conv.core.options["dtype_acc"] == "float64"
    out = torch.empty(30, 2)
    a = conv(g, x, y, b, backend="CPU", device_id=-1, ranges=None, out=out)
    assert a is out
    torch.testing.assert_close(a.double(), dense(g, x, y, b), rtol=1e-5, atol=1e-6)


def test_numpy_genred_and_generic_take_the_same_keywords():
    g, x, y, b = (t.numpy() for t in inputs())
    conv = lknp.Genred(GAUSS, GAUSS_ALIASES, axis=np.int64(1), use_double_acc=True,
                       enable_chunks=False, use_fast_math=False)
    a = conv(g, x, y, b, backend="auto", device_id=-1)
    np.testing.assert_allclose(a, dense(g, x, y, b).numpy(), rtol=1e-12, atol=1e-12)
    gsum = lkt.generic_sum(GAUSS, "A = Vi(2)", *GAUSS_ALIASES, dtype_acc="float64",
                           rec_multVar_highdim=False)
    torch.testing.assert_close(gsum(*inputs(), backend="CPU", device_id=-1),
                               dense(*inputs()))


def test_kahan_scheme_in_float32():
    g, x, y, b = inputs(torch.float32)
    conv = lkt.Genred(GAUSS, GAUSS_ALIASES, axis=1, sum_scheme="kahan_scheme")
    torch.testing.assert_close(conv(g, x, y, b).double(), dense(g, x, y, b), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("k, axis", [(torch.tensor(4), torch.tensor(1)),
                                     (np.int32(4), np.array(1))])
def test_k_and_axis_as_numpy_integers_and_0d_tensors(k, axis):
    g, x, y, b = inputs()
    knn = lkt.Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="ArgKMin",
                     axis=axis, opt_arg=k)
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    assert torch.equal(knn(x, y), d2.topk(4, dim=1, largest=False).indices)


@pytest.mark.parametrize("init, call, word", [
    ({"foo": 1}, {}, "'foo'"),
    ({"optional_flags": ["-DX"]}, {}, "optional_flags"),
    ({"use_double_acc": True, "dtype_acc": "float32"}, {}, "use_double_acc"),
    ({"dtype_acc": "double"}, {}, "dtype_acc"),
    ({"sum_scheme": "pairwise"}, {}, "sum_scheme"),
    ({"enable_chunks": "yes"}, {}, "enable_chunks"),
    ({"axis": 1.0}, {}, "axis"),
    ({"reduction_op": "KMin", "opt_arg": torch.tensor([3])}, {}, "opt_arg"),
    ({"reduction_op": "KMin", "opt_arg": 3.0}, {}, "opt_arg"),
    ({}, {"foo": 1}, "'foo'"),
    ({}, {"backend": "GPU_3D"}, "backend"),
    ({}, {"device_id": 0}, "device_id=0"),
    ({}, {"device_id": -2}, "device_id"),
    ({}, {"device_id": 0.0}, "device_id"),
    ({}, {"ranges": (torch.zeros(1, 2),) * 6}, "ranges"),
])
@pytest.mark.parametrize("api", [lkt, lknp])
def test_refused_keywords(api, init, call, word):
    args = inputs()
    if api is lknp:
        args = [t.numpy() for t in args]
    kw = {"axis": 1, **init}
    msg = no_compile(lambda: api.Genred(GAUSS, GAUSS_ALIASES, **kw)(*args, **call))
    assert word in msg and GAUSS in msg


def test_generic_refuses_the_keywords_it_sets():
    msg = no_compile(lambda: lkt.generic_sum(GAUSS, "A = Vi(2)", *GAUSS_ALIASES, axis=0))
    assert "axis" in msg


def test_split_for_lazytensor_reductions():
    init, call = split_reduction_options({"use_double_acc": True, "backend": "GPU_2D_device",
                                          "device_id": np.int64(0)}, "a LazyTensor")
    assert init == {"dtype_acc": "float64", "sum_scheme": "auto"}
    assert call == {"backend": "GPU_2D", "device_id": 0, "ranges": None, "out": None}
    assert type(call["device_id"]) is int
    assert set(REDUCTION_KEYWORDS) >= {"enable_chunks", "use_fast_math", "optional_flags"}
    with pytest.raises(LazyKeOpsError, match="'dtype'"):  # Genred.__init__ only
        split_reduction_options({"dtype": "float32"}, "a LazyTensor")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults say nothing
        split_reduction_options({k: v for k, v in [("enable_chunks", True)]}, "x")


def test_device_id_names_both_devices():
    check_device_id(1, "cuda:1", "f")
    check_device_id(-1, "cpu", "f")
    with pytest.raises(LazyKeOpsError) as info:
        check_device_id(0, "cuda:1", "formula 'F'")
    assert "device_id=0" in str(info.value) and "cuda:1" in str(info.value)
