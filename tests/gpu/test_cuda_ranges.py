"""Block-sparse reductions on the CUDA engine (runtime/ranges.py; csrc/lk_cuda_kernel.cuh's
SparseWork): every reduction over both axes in both schemes (1D, split) against the dense
masked reference in float64, at sizes where clusters span several thread blocks and
blocks straddle nothing; many small clusters; the chunked and global-memory variants;
wide outputs in slices; float16 / bfloat16; batch dims with per-element ranges; gradients; ranges on the wrong
device. Skipped where no CUDA device is available (CI)."""

import pytest
import torch

from lazykeops import LazyKeOpsError
from lazykeops.torch import Genred
from tests.engine.test_reductions import ALIASES
from tests.runtime.ranges_cases import (CASES, _ids, assert_outputs, case_inputs, expected,
                                        mask_of, six, stacked, structure)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
N, M = 1500, 1300  # clusters of up to 375 rows: several blocks of 256 or 512 rows


def cuda(ts):
    return [t.cuda() for t in ts]


def routine_of(case, axis):
    red, formula, formula2, k = case[:4]
    return Genred(formula, ALIASES, reduction_op=red, axis=axis, opt_arg=k, formula2=formula2)


@pytest.mark.parametrize("backend", ["GPU_1D", "GPU_2D"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_every_reduction_both_schemes(case, axis, backend):
    struct = structure(N, M, seed=21)
    inputs = case_inputs(N, M)
    out = routine_of(case, axis)(*cuda(inputs), ranges=cuda(six(struct)), backend=backend)
    assert_outputs(out, expected(case, axis, inputs, mask_of(struct, N, M)), rtol=1e-10,
                   atol=1e-10)


@pytest.mark.parametrize("largest", [1, 7, 40])
def test_many_small_clusters(largest):
    struct = structure(N, M, seed=22, largest=largest)
    inputs = case_inputs(N, M)
    for case in (CASES[0], CASES[-1]):  # Sum, KMin_ArgKMin
        for backend in ("GPU_1D", "GPU_2D"):
            out = routine_of(case, 1)(*cuda(inputs), ranges=cuda(six(struct)), backend=backend)
            assert_outputs(out, expected(case, 1, inputs, mask_of(struct, N, M)), rtol=1e-10,
                           atol=1e-10)


@pytest.mark.parametrize("dim", [200, 40])  # chunked sums; rows read from global memory
def test_wide_variables(dim):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, dim, generator=g, dtype=torch.float64) / dim ** 0.5
    y = torch.randn(M, dim, generator=g, dtype=torch.float64) / dim ** 0.5
    b = torch.rand(M, 1, generator=g, dtype=torch.float64)
    struct = structure(N, M, seed=23)
    # Elem(X, 0) uses X outside a sum: no chunks, X read from global memory at each use.
    formula = "Exp(-SqDist(X,Y)) * B" if dim == 200 else "Exp(-SqDist(X,Y)) * Elem(X, 0) * B"
    routine = Genred(formula, [f"X = Vi({dim})", f"Y = Vj({dim})", "B = Vj(1)"], axis=1)
    K = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1))
    K = K if dim == 200 else K * x[:, :1]
    want = (K * mask_of(struct, N, M)) @ b
    for backend in ("GPU_1D", "GPU_2D"):
        got = routine(*cuda((x, y, b)), ranges=cuda(six(struct)), backend=backend)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-12)


def test_wide_outputs_in_slices():
    # Outputs past 32 components: one kernel per slice of 16 (runtime/cuda.py), each with
    # the ranges, each its own thread blocks.
    g = torch.Generator().manual_seed(4)
    x, y = (torch.randn(n, 40, generator=g, dtype=torch.float64) for n in (N, M))
    struct = structure(N, M, seed=26)
    routine = Genred("X - Y", ["X = Vi(40)", "Y = Vj(40)"], reduction_op="Min_ArgMin", axis=1)
    values, idx = routine(x.cuda(), y.cuda(), ranges=cuda(six(struct)))
    dense = (x[:, None] - y[None]).masked_fill(~mask_of(struct, N, M)[..., None], float("inf"))
    want_v, want_i = dense.min(1)
    torch.testing.assert_close(values.cpu(), want_v)
    assert torch.equal(idx.cpu(), want_i.masked_fill(want_v.isinf(), -1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    struct = structure(N, M, seed=24)
    rounded = [t.to(dtype) for t in case_inputs(N, M)]
    mask = mask_of(struct, N, M)
    for case in (CASES[0], CASES[1], CASES[7]):  # Sum, LogSumExp, ArgMin
        got = routine_of(case, 1)(*cuda(rounded), ranges=cuda(six(struct)))
        want = expected(case, 1, [t.double() for t in rounded], mask)
        got = got if isinstance(got, tuple) else (got,)
        for g, w in zip(got, want):
            if w.dtype == torch.int64:  # ties can go either way in half precision
                assert ((g.cpu() == -1) == (w.reshape(g.shape) == -1)).all()
            else:
                torch.testing.assert_close(g.cpu().double(), w.reshape(g.shape), rtol=2e-2,
                                           atol=5e-2)


def test_batch_dims_with_per_element_ranges_and_gradients():
    B = 3
    g = torch.Generator().manual_seed(5)
    x = torch.randn(B, N, 3, generator=g, dtype=torch.float64)
    y = torch.randn(M, 3, generator=g, dtype=torch.float64)
    b = torch.rand(M, 2, generator=g, dtype=torch.float64)
    structs = [structure(N, M, seed=30 + e) for e in range(B)]
    per_element = stacked(structs, N, M)  # one set per element, padded
    routine = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)
    xs, ys, bs = (t.cuda().requires_grad_() for t in (x, y, b))
    out = routine(xs, ys, bs, ranges=cuda(per_element))
    weights = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad((out * weights.cuda()).sum(), (xs, ys, bs))
    xr, yr, br = (t.clone().requires_grad_() for t in (x, y, b))
    ref = torch.stack([(torch.exp(-((xr[e][:, None] - yr[None]) ** 2).sum(-1))
                        * mask_of(structs[e], N, M)) @ br for e in range(B)])
    ref_grads = torch.autograd.grad((ref * weights).sum(), (xr, yr, br))
    torch.testing.assert_close(out.detach().cpu(), ref.detach())
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.cpu(), want)


def test_ranges_on_the_wrong_device():
    struct = structure(N, M, seed=25)
    routine = routine_of(CASES[0], 1)
    with pytest.raises(LazyKeOpsError, match="ranges_i.*device cuda:0.*cpu"):
        routine(*cuda(case_inputs(N, M)), ranges=six(struct))
