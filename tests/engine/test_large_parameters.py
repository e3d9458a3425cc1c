"""Parameters of millions of components on the CPU (issue 11): the engine packs them into
a heap buffer, once per batch, where it used to copy them into an array on the stack (32 MB
for Pm(4000000) in float64: the process died). The formula of the report runs in a child
process, so that a regression shows as a failed test rather than a dead pytest; a
parameter of 100,000 components with batch dims and a second parameter checks the
packing offsets and the batch strides."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from lazykeops import LazyKeOpsError
from lazykeops.compile.codegen import check_stack_size
from lazykeops.formula import var
from lazykeops.formula.parser import parse_formula
from lazykeops.torch import Genred

FORMULA = "Sum(P)*X*Y"
ALIASES = ["X = Vi(1)", "Y = Vj(1)", "P = Pm(4000000)"]

# Quarter-integers of magnitude at most 1/2: every partial sum of P is exact in float32,
# so that float32 results differ from float64 ones by the rounding of x, y and the output.
CHILD = r"""
import sys
import numpy as np
framework, dtype = sys.argv[1], sys.argv[2]
formula, aliases = sys.argv[3], sys.argv[4:]
rng = np.random.default_rng(0)
x, y = rng.random((5, 1)).astype(dtype), rng.random((7, 1)).astype(dtype)
p = (rng.integers(-2, 3, 4_000_000) / 4).astype(dtype)
want = p.astype(np.float64).sum() * x.astype(np.float64) * y.astype(np.float64).sum()
if framework == "torch":
    import torch
    from lazykeops.torch import Genred
    got = Genred(formula, aliases, axis=1)(*map(torch.from_numpy, (x, y, p))).double().numpy()
else:
    from lazykeops.numpy import Genred
    got = Genred(formula, aliases, axis=1)(x, y, p)
rtol = 1e-12 if dtype == "float64" else 1e-5
np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
print("ok")
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", ["torch", "numpy"])
def test_a_parameter_of_four_million_components(framework, dtype):
    res = subprocess.run([sys.executable, "-c", CHILD, framework, dtype, FORMULA, *ALIASES],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), \
        f"child exited with {res.returncode}\n{res.stdout}\n{res.stderr}"


def test_the_stack_check_does_not_count_parameters():
    """Read in place from the heap (CPU) or shared / global memory (GPU), never copied
    to a thread's stack: a parameter of any size is accepted, large intermediate values
    are not."""
    nodes = {"X": var(0, 1, 0), "Y": var(1, 1, 1), "P": var(2, 4_000_000, 2)}
    check_stack_size([parse_formula(FORMULA, nodes)], (1, 0), FORMULA)
    with pytest.raises(LazyKeOpsError, match="too large"):
        check_stack_size([parse_formula("Sum(P*P)", nodes)], (1, 0), "Sum(P*P)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_parameter_of_100000_components_with_batch_dims(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 6, 1, generator=g, dtype=torch.float64)
    y = torch.rand(1, 2, 8, 1, generator=g, dtype=torch.float64)
    q = torch.rand(3, generator=g, dtype=torch.float64)  # broadcast over the batch
    p = (torch.randint(-2, 3, (3, 2, 100_000), generator=g) / 4).double()
    routine = Genred("Sum(P) * X * Y + Elem(P, 99999) * Elem(Q, 2)",
                     ["X = Vi(1)", "Y = Vj(1)", "Q = Pm(3)", "P = Pm(100000)"], axis=1)
    got = routine(*[t.to(dtype) for t in (x, y, q, p)])
    x, y, q, p = (t.to(dtype).double() for t in (x, y, q, p))
    terms = p.sum(-1)[..., None, None, None] * x[..., :, None, :] * y[..., None, :, :] \
        + (p[..., 99_999] * q[2])[..., None, None, None]
    want = terms.sum(-2)
    assert got.shape == want.shape == (3, 2, 6, 1)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max())
