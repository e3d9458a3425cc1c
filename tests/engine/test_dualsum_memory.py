"""The CPU DualSum's memory (issue 11): the engine covers the reduced range in spans of at
most COLUMN_SPAN_DOUBLES / COLS terms (csrc/lk_cpu_engine.h), each thread keeping column
partials for one span only, where it used to keep COLS * M doubles per thread (plus as many
for their total). Gradients whose M crosses several spans, against dense torch float64
autograd, for both outputs (rows: the gradient in x; columns: in y and b), with chunked
outputs and batch dims; and the peak memory of a backward pass at M = 2e6 on two threads,
in a child process."""

import json
import re
import subprocess
import sys

import pytest
import torch

from lazykeops.compile.build import CSRC
from lazykeops.torch import Genred

SPAN_DOUBLES = 1 << int(re.search(r"COLUMN_SPAN_DOUBLES = 1 << (\d+);",
                                  (CSRC / "lk_cpu_engine.h").read_text()).group(1))
N = 37  # two blocks of rows and a partial one


def columns_crossing(spans, cols):
    """An M whose range holds more than `spans` spans for `cols` column components (a
    span has at most SPAN_DOUBLES / cols terms), the last one partial."""
    return spans * (SPAN_DOUBLES // cols) + 123


def gaussian(x, y, b):
    """Dense exp(-|x_i - y_j|^2) @ b; squared distances expanded to fit in memory at
    large M (exact enough in float64)."""
    sq = (x * x).sum(-1)[..., :, None] + (y * y).sum(-1)[..., None, :] \
        - 2 * x @ y.transpose(-1, -2)
    return torch.exp(-sq) @ b


def check_gradients(x, y, b, wrt, dtype, tol):
    routine = Genred("Exp(-SqDist(X,Y)) * B",
                     [f"X = Vi({x.shape[-1]})", f"Y = Vj({y.shape[-1]})", "B = Vj(1)"], axis=1)
    inputs = [t.to(dtype, copy=True).requires_grad_(k in wrt) for k, t in enumerate((x, y, b))]
    got = torch.autograd.grad(routine(*inputs).square().sum(), [inputs[k] for k in wrt])
    dense = [t.to(dtype).to(torch.float64, copy=True).requires_grad_(k in wrt) for k, t in enumerate((x, y, b))]
    want = torch.autograd.grad(gaussian(*dense).square().sum(), [dense[k] for k in wrt])
    for k, g, w in zip(wrt, got, want):
        torch.testing.assert_close(g.double(), w, rtol=tol, atol=tol * w.abs().max(),
                                   msg=lambda m: f"gradient {k}: {m}")


def inputs(batch, n, m, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*batch, n, d, generator=g, dtype=torch.float64) / d ** 0.5,
            torch.rand(*batch, m, d, generator=g, dtype=torch.float64) / d ** 0.5,
            torch.randn(*batch, m, 1, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("wrt", [(0, 1), (0, 1, 2)], ids=["x,y", "x,y,b"])
def test_gradients_over_several_spans(wrt, dtype, tol):
    """Columns: y's 3 components, the negated rows (x, y); y's and b's, 4 (x, y, b)."""
    x, y, b = inputs((), N, columns_crossing(3, 3), 3)
    check_gradients(x, y, b, wrt, dtype, tol)


def test_wide_gradients_over_several_spans_with_batch_dims():
    """D = 64: chunked outputs, 64 columns, spans of at most 4096 terms."""
    x, y, b = inputs((2,), N, columns_crossing(4, 64), 64)
    check_gradients(x, y, b, (0, 1), torch.float64, 1e-10)


def test_one_span_and_a_few_rows():
    """M below one span, fewer rows than a block: the path of the usual sizes."""
    check_gradients(*inputs((), 5, 1000, 3), (0, 1, 2), torch.float64, 1e-10)


# Peak RSS of forward + backward in x and y (the DualSum over M columns), measured in a
# fresh process after the kernels are compiled and the inputs allocated.
CHILD = r"""
import json, resource, sys
import torch
from lazykeops.torch import LazyTensor

torch.set_num_threads(2)


def run(n, m):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, generator=g).requires_grad_()
    y = torch.rand(m, 3, generator=g).requires_grad_()
    b = torch.randn(m, 1, generator=g)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    K = (-((LazyTensor(x[:, None]) - LazyTensor(y[None])) ** 2).sum(-1)).exp()
    (K @ b).sum().backward()
    return before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


run(64, 300)
before, after = run(64, int(sys.argv[1]))
print(json.dumps({"needed": (after - before) * 1024}))
"""


def test_backward_memory_does_not_grow_with_threads_times_m():
    """On two threads at M = 2e6 the old engine needed 3 x 48 MB of column sums in double
    (one copy per thread and their total), 168 MB in all; now the engine's copy of the
    j-variables (as large as y and b), the column output (as large as y) and a few MB of
    span partials: 57 MB. The bound leaves room for allocator slack."""
    m = 2_000_000
    res = subprocess.run([sys.executable, "-c", CHILD, str(m)], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    needed = json.loads(res.stdout.strip().splitlines()[-1])["needed"]
    y_and_b, column_output = m * 4 * 4, m * 3 * 4
    assert needed < y_and_b + column_output + (24 << 20), \
        f"the backward pass needed {needed / 2**20:.0f} MB at M = {m:,}"
