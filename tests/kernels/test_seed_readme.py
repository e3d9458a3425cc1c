'''The two code blocks of the 2018 KeOps README (its `kernel_product` block and its
`generic_sum` block with Vx/Vy aliases), unchanged but for pykeops -> lazykeops in their
import lines, give dense torch's values and gradients.'''

import os
import re

import torch

KERNEL_PRODUCT_BLOCK = """\
import torch
from lazykeops.torch.kernels import Kernel, kernel_product

# Generate the data as pytorch tensors
x = torch.randn(1000,3, requires_grad=True)
y = torch.randn(2000,3, requires_grad=True)
b = torch.randn(2000,2, requires_grad=True)

# Pre-defined kernel: using custom expressions is also possible!
# Notice that the parameter sigma is a dim-1 vector, *not* a scalar:
sigma  = torch.tensor([.5], requires_grad=True)
params = {
    "id"      : Kernel("gaussian(x,y)"),
    "gamma"   : 1./sigma**2,
}

# Depending on the inputs' types, 'a' is a CPU or a GPU variable.
# It can be differentiated wrt. x, y, b and sigma.
a = kernel_product(params, x, y, b)
"""

GENERIC_SUM_BLOCK = """\
from lazykeops.torch.generic_sum import generic_sum

gaussian_conv = generic_sum("Exp(-G*SqDist(X,Y)) * B", # f(g,x,y,b) = exp( -g*|x-y|^2 ) * b
                            "A = Vx(2)",  # The output is indexed by "i", of dim 2 -> summation over "j"
                            "G = Pm(1)",  # First arg  is a parameter,    of dim 1
                            "X = Vx(3)",  # Second arg is indexed by "i", of dim 3
                            "Y = Vy(3)",  # Third arg  is indexed by "j", of dim 3
                            "B = Vy(2)" ) # Fourth arg is indexed by "j", of dim 2
a = gaussian_conv( 1./sigma**2, x,y,b)
"""

SEED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "seed",
                    "keops-readme-2018.md")


def dense(x, y, b, sigma):
    x, y, b, sigma = (t.double() for t in (x, y, b, sigma))
    return torch.exp(-torch.cdist(x, y) ** 2 / sigma ** 2) @ b


def check_block(ns):
    """ns['a'] matches dense torch (float64) in value and in gradient w.r.t. x, y, b and
    sigma; returns the gradients."""
    x, y, b, sigma, a = (ns[k] for k in ("x", "y", "b", "sigma", "a"))
    assert a.shape == (1000, 2) and a.dtype == torch.float32
    ref = dense(x, y, b, sigma)
    torch.testing.assert_close(a.double(), ref, rtol=1e-4, atol=1e-4)
    w = torch.randn(1000, 2)
    inputs = [x, y, b, sigma]
    ours = torch.autograd.grad((a * w).sum(), inputs)
    theirs = torch.autograd.grad((ref * w.double()).sum(), inputs)
    for g1, g2 in zip(ours, theirs):
        scale = g2.abs().max().item()
        torch.testing.assert_close(g1.double(), g2.double(), rtol=1e-4, atol=1e-4 * scale)
    return ours


def test_seed_blocks_run_and_match_dense_torch():
    torch.manual_seed(0)
    ns = {}
    exec(KERNEL_PRODUCT_BLOCK, ns)
    first = ns["a"].detach().clone()
    check_block(ns)
    exec(GENERIC_SUM_BLOCK, ns)    # the README's second block reuses sigma, x, y, b
    torch.testing.assert_close(ns["a"], first, rtol=1e-5, atol=1e-5)
    check_block(ns)


def _python_blocks(markdown):
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_blocks_are_the_seed_readme_blocks():
    """The blocks above are the README's, import lines aside (when the seed is at hand)."""
    if not os.path.exists(SEED):
        import pytest
        pytest.skip("the 2018 README is not in this checkout")
    with open(SEED, encoding="utf-8") as f:
        blocks = [blk.replace("from pykeops.", "from lazykeops.")
                  for blk in _python_blocks(f.read())]
    assert KERNEL_PRODUCT_BLOCK in blocks and GENERIC_SUM_BLOCK in blocks
