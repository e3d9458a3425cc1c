"""CUDA kernels compiled by NVRTC (compile/nvrtc.py) and run by the driver-API host side
(compile/driver.py, csrc/lk_cuda_driver.h), the default where libnvrtc is found: the same
results as the nvcc libraries (LAZYKEOPS_CUDA_COMPILER=nvcc) on the tiled, chunked and
tensor-core variants, the split scheme (workspace, merge kernel), float16 and block-sparse
ranges; the planner and the rows per block as the nvcc library reports them. The rest of
the GPU suite runs on the default compiler. Skipped without a CUDA device or libnvrtc
(CI)."""

import pytest
import torch

from lazykeops.compile import driver, nvrtc
from lazykeops.torch import Genred

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or not nvrtc.available(), reason="no CUDA device or NVRTC")]
CUDA = "cuda"


def both(make, args, monkeypatch, **call):
    """(nvcc result, NVRTC result, the NVRTC library) of a routine `make()` builds."""
    monkeypatch.setenv("LAZYKEOPS_CUDA_COMPILER", "nvcc")
    want = make()(*args, **call)
    monkeypatch.setenv("LAZYKEOPS_CUDA_COMPILER", "nvrtc")
    routine = make()
    got = routine(*args, **call)
    libs = list(routine.core._kernels.values())
    return want, got, libs


def points(n, m, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g).to(CUDA, dtype),
            torch.rand(m, d, generator=g).to(CUDA, dtype),
            torch.randn(m, 2, generator=g).to(CUDA, dtype))


def same(want, got, rtol=1e-6):
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for w, g in zip(want, got):
        if w.dtype == torch.int64:
            assert torch.equal(w, g)
        else:
            torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * w.abs().max().item())


@pytest.mark.parametrize("backend", ["GPU_1D", "GPU_2D"])
def test_gaussian_sum_both_schemes(monkeypatch, backend):
    x, y, b = points(1000, 3000, 3)
    want, got, libs = both(lambda: Genred("Exp(-SqDist(X,Y)) * B",
                                          ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1),
                           (x, y, b), monkeypatch, backend=backend)
    assert all(isinstance(lib, driver.CubinLibrary) for lib in libs)
    same(want, got)


def test_selections_and_a_chunked_formula(monkeypatch):
    x, y, _ = points(500, 4000, 3)
    same(*both(lambda: Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"],
                              reduction_op="ArgKMin", axis=1, opt_arg=5),
               (x, y), monkeypatch)[:2])
    x, y, b = points(300, 700, 200)  # wide: the chunked variant
    same(*both(lambda: Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(200)", "Y = Vj(200)",
                                                        "B = Vj(2)"], axis=1),
               (x, y, b), monkeypatch)[:2], rtol=1e-5)


def test_tensor_cores_and_float16(monkeypatch):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        x, y, _ = points(2000, 300, 64)
        same(*both(lambda: Genred("SqDist(X,Y)", ["X = Vi(64)", "Y = Vj(64)"],
                                  reduction_op="ArgMin", axis=1), (x, y), monkeypatch)[:2])
    finally:
        torch.set_float32_matmul_precision(before)
    x, y, b = points(1000, 2000, 3, torch.float16)
    same(*both(lambda: Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"],
                              axis=1), (x, y, b), monkeypatch)[:2], rtol=1e-3)


def test_block_sparse_ranges(monkeypatch):
    x, y, b = points(1000, 1000, 3)
    # Two clusters of rows, each reducing over one block of terms (pykeops's 6-tuple).
    ranges_i = torch.tensor([[0, 600], [600, 1000]], dtype=torch.int32)
    slices = torch.tensor([1, 2], dtype=torch.int32)
    redranges_j = torch.tensor([[0, 400], [400, 1000]], dtype=torch.int32)
    ranges_j, redranges_i = redranges_j, ranges_i
    slices_i = slices_j = slices
    ranges = tuple(t.to(CUDA) for t in (ranges_i, slices_i, redranges_j, ranges_j, slices_j,
                                         redranges_i))
    same(*both(lambda: Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"],
                              axis=1), (x, y, b), monkeypatch, ranges=ranges)[:2])


def test_the_planner_and_rows_per_block_agree_with_nvcc(monkeypatch):
    make = lambda: Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"],
                          axis=1)
    target = "cuda:sm_%d%d" % torch.cuda.get_device_capability()
    monkeypatch.setenv("LAZYKEOPS_CUDA_COMPILER", "nvcc")
    nvcc = make().core.kernel("float32", target)
    monkeypatch.setenv("LAZYKEOPS_CUDA_COMPILER", "nvrtc")
    cubin = make().core.kernel("float32", target)
    assert isinstance(cubin, driver.CubinLibrary)
    assert cubin.block_rows == nvcc.block_rows
    for sizes in [(1, 100, 1_000_000, 0), (1, 10_000_000, 10_000, 0), (1, 100, 1_000_000, 1),
                  (1, 100_000, 10_000, 2), (1, 100, 1, 2)]:
        assert cubin.plan(*sizes) == nvcc.plan(*sizes), sizes
