"""Companion kernels built side by side (runtime/cuda.py: build_kernels): the kernels one
call needs together (the slices of a wide output, the two gradient Sums of a CUDA backward)
are built in parallel, each once, and are then the ones the launches use. Checked here
with CPU kernels: the builder is the same for both targets."""

import uuid

import torch

from lazykeops.compile import build
from lazykeops.runtime.cuda import build_kernels, output_slices
from lazykeops.torch import Genred


def fresh(width):
    """A reduction whose kernels were never built: a constant of this run."""
    c = 1 + uuid.uuid4().int % 10 ** 6 / 10 ** 6
    return Genred(f"Exp(-SqDist(X,Y) * {c:.6f}) * B", ["X = Vi(2)", "Y = Vj(2)",
                                                       f"B = Vj({width})"], axis=1)


def test_slices_and_cores_are_built_once_each_and_then_used():
    wide, narrow = fresh(40), fresh(1)  # 40 components: three slices of 16
    slices = [part for _, part in output_slices(wide.core)]
    assert len(slices) == 3
    before = build.stats["builds"]
    build_kernels([wide.core, narrow.core], "float64", "cpu", False)
    assert build.stats["builds"] == before + 4
    built = [p._kernels[p.kernel_key("float64", "cpu", False)] for p in (*slices, narrow.core)]
    assert len({lib.key for lib in built}) == 4
    build_kernels([wide.core, narrow.core], "float64", "cpu", False)  # nothing left to build
    assert build.stats["builds"] == before + 4
    # The narrow core runs with the kernel built for it (the CPU engine computes wide
    # outputs whole: its slices are the CUDA engine's).
    x, y, b = torch.rand(5, 2, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64), \
        torch.rand(4, 1, dtype=torch.float64)
    narrow(x, y, b)
    assert build.stats["builds"] == before + 4
