"""Large parameters on the GPU (issue 11): the CUDA kernels stage the parameters in shared
memory only up to LK_CUDA_P_SHARED bytes (csrc/lk_cuda_engine.cuh) and read larger ones
from global memory, where a parameter of 100,000 floats used to leave no room for a tile
(status 2: "the j-variables ... are too large").

Without a GPU: the kernels compile with nvcc for sm_90, and their configurations (checked
by static_assert in the compiled source) put large parameters in global memory and small
ones in shared memory, within the shared memory of an H100 / H200 block. With a GPU
(marked gpu): the formula of the report, batch dims, and the chunked kernel (variables of
200 components), against dense torch float64."""

import pytest
import torch

from lazykeops.compile.codegen import CUDA_TYPES, render_source
from lazykeops.compile.spec import KernelSpec
from lazykeops.formula import var
from lazykeops.formula.aliases import parse_aliases
from lazykeops.formula.parser import parse_formula
from lazykeops.torch import Genred
from tests.compile.nvcc_checks import NVCC, compile_all

on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = "cuda"

FORMULA = "Sum(P)*X*Y"
ALIASES = ["X = Vi(1)", "Y = Vj(1)", "P = Pm(4000000)"]
SHARED_LIMIT = 227 * 1024  # bytes of shared memory per block on the H100 and H200 (opt-in)
WIDE = 200  # past compile/chunking.py's WIDE_ABOVE_WORDS: the chunked kernel
CHUNKED = "Exp(-SqDist(X,Y)) * Sum(P)"
CHUNKED_WIDE_PARAMETER = "Exp(-SqDist(X,Y) + Scalprod(W, X)) * Sum(P)"
CHUNKED_ALIASES = [f"X = Vi({WIDE})", f"Y = Vj({WIDE})", f"W = Pm({WIDE})", "P = Pm(100000)"]
BATCHED = "Sum(P) * X * Y + Elem(P, 99999) * Elem(Q, 2)"
BATCHED_ALIASES = ["X = Vi(1)", "Y = Vj(1)", "Q = Pm(3)", "P = Pm(100000)"]

# (formula, aliases, parameters in shared memory, chunked kernel)
CONFIGS = [(FORMULA, ALIASES, False, False),
           (BATCHED, BATCHED_ALIASES, False, False),
           (CHUNKED, CHUNKED_ALIASES, False, True),
           (CHUNKED_WIDE_PARAMETER, CHUNKED_ALIASES, False, True),
           ("Exp(-G*SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)"],
            True, False),
           ("Exp(-SqDist(X,Y) + Scalprod(W, X)) * B",
            [f"X = Vi({WIDE})", f"Y = Vj({WIDE})", "B = Vj(1)", f"W = Pm({WIDE})"], True, True)]


def _spec(formula, alias_texts, dtype):
    aliases = parse_aliases(alias_texts)
    nodes = {a.name: var(a.pos, a.dim, a.cat) for a in aliases}
    return KernelSpec((parse_formula(formula, nodes),), tuple((a.cat, a.dim) for a in aliases),
                      "Sum", None, dtype, target="cuda")


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_large_parameters_compile_and_leave_shared_memory(tmp_path, dtype):
    # Every configuration in float32; the other dtypes change the types and the size of a
    # scalar only: the formula is enough there (nvcc takes ~8 s a unit in CI).
    configs = CONFIGS if dtype == "float32" else CONFIGS[:1]
    types = ", ".join(CUDA_TYPES[dtype])
    config = f"lk::Engine<LkFormula, LkReduction, {types}>::C"
    paths = []
    for n, (formula, aliases, shared, chunked) in enumerate(configs):
        checks = [f"static_assert({'' if shared else '!'}{config}::P_IN_SHARED, \"place\");",
                  f"static_assert({config}::SHARED <= {SHARED_LIMIT}, \"shared memory\");",
                  f"static_assert({'' if chunked else '!'}lk::IsChunked<LkFormula>::value, "
                  "\"kernel\");"]
        path = tmp_path / f"large{n}.cu"
        path.write_text(render_source(_spec(formula, aliases, dtype)) + "\n".join(checks) + "\n")
        paths.append(path)
    # Device code only: the configurations are the device side's (test_cuda_codegen
    # compiles the host side).
    results = compile_all(paths, host_first=False)
    for (formula, *_), (_, returncode, stderr) in zip(configs, results):
        assert returncode == 0, f"{formula} ({dtype})\n{stderr}"


TOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 3e-3}


def quarters(*shape, scale=4, generator=None):
    """Multiples of 1 / scale in [-2 / scale, 2 / scale]: their partial sums are exact in
    float32 (and the values in float16), so that the references differ from the kernels
    only by the rounding of the other inputs and of the output."""
    return torch.randint(-2, 3, shape, generator=generator).double() / scale


def check(routine, inputs, dense, dtype):
    """The kernel on the GPU at `dtype` against `dense` in float64 on the inputs rounded
    to `dtype`."""
    rounded = [t.to(dtype) for t in inputs]
    got = routine(*[t.to(CUDA) for t in rounded])
    assert got.is_cuda and got.dtype == dtype
    want = dense(*[t.double() for t in rounded])
    tol = TOL[dtype]
    torch.testing.assert_close(got.cpu().double(), want, rtol=tol, atol=tol * want.abs().max())


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_a_parameter_of_four_million_components_on_the_gpu(dtype):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 1, generator=g), torch.rand(7, 1, generator=g)
    p = quarters(4_000_000, generator=g)
    check(Genred(FORMULA, ALIASES, axis=1), (x, y, p),
          lambda x, y, p: p.sum() * x * y.sum(), dtype)


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_large_parameters_with_batch_dims_on_the_gpu(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 6, 1, generator=g)
    y = torch.rand(1, 2, 300, 1, generator=g)  # past one tile of terms
    q = torch.rand(3, generator=g)
    p = quarters(3, 2, 100_000, scale=16, generator=g)

    def dense(x, y, q, p):
        terms = p.sum(-1)[..., None, None, None] * x[..., :, None, :] * y[..., None, :, :] \
            + (p[..., 99_999] * q[2])[..., None, None, None]
        return terms.sum(-2)

    check(Genred(BATCHED, BATCHED_ALIASES, axis=1), (x, y, q, p), dense, dtype)


@pytest.mark.gpu
@on_gpu
@pytest.mark.parametrize("formula", [CHUNKED, CHUNKED_WIDE_PARAMETER])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_large_parameters_in_the_chunked_kernel(formula, dtype):
    """Variables of 200 components, a sum in chunks of 32 and a tail of 8; P read by
    `eval`, W (as wide as X) by the chunked sums; two batches."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 70, WIDE, generator=g) / WIDE ** 0.5
    y = torch.rand(2, 90, WIDE, generator=g) / WIDE ** 0.5
    w = torch.randn(2, WIDE, generator=g) / WIDE
    p = quarters(2, 100_000, scale=16, generator=g)

    def dense(x, y, w, p):
        sq = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
        if formula == CHUNKED_WIDE_PARAMETER:
            sq = sq - (x @ w[:, :, None])
        return torch.exp(-sq).sum(-1, keepdim=True) * p.sum(-1)[:, None, None]

    check(Genred(formula, CHUNKED_ALIASES, axis=1), (x, y, w, p), dense, dtype)
