"""Per-op test inputs shared by the registry tests (forward and vjp): samplers for the
argument domains, the example cases (each op's example plus the other dispatch branches)
and the layout of variables by category.

Argument k of a case has category CATS[(k + shift) % 3] (i, j, parameter); `shift` lets a
test move the single argument of a unary op to another category.
"""

import torch

from lazykeops.formula import CAT_I, CAT_J, CAT_P, OPS

CATS = (CAT_I, CAT_J, CAT_P)

# Domains of the formula arguments: name -> sampler(generator, shape).
SAMPLERS = {
    "any": lambda g, s: torch.randn(s, generator=g, dtype=torch.float64),
    "positive": lambda g, s: 0.5 + torch.rand(s, generator=g, dtype=torch.float64),
    "nonzero": lambda g, s: torch.where(torch.rand(s, generator=g) < 0.5, -1.0, 1.0)
    .to(torch.float64) * (0.5 + torch.rand(s, generator=g, dtype=torch.float64)),
    "unit": lambda g, s: 1.8 * torch.rand(s, generator=g, dtype=torch.float64) - 0.9,
    "negative": lambda g, s: -0.5 - torch.rand(s, generator=g, dtype=torch.float64),
    "small_int": lambda g, s: torch.randint(-2, 3, s, generator=g).to(torch.float64),
    # OneHot: reals that round to indices below, inside and above 0..3.
    "index": lambda g, s: 7.0 * torch.rand(s, generator=g, dtype=torch.float64) - 1.5,
    # BSpline knots: increasing along the last axis.
    "sorted": lambda g, s: torch.sort(torch.randn(s, generator=g, dtype=torch.float64),
                                      dim=-1).values,
}

# Beyond each op's example: the other dispatch branches and edge shapes.
EXTRA_CASES = [
    ("WeightedSqNorm", (1, 3), ()),
    ("WeightedSqNorm", (3, 3), ()),
    ("WeightedSqDist", (1, 3, 3), ()),
    ("WeightedSqDist", (3, 3, 3), ()),
    ("MatVecMult", (4, 1), ()),
    ("TensorDot", (6, 6), ((2, 3), (3, 2), (0, 1), (1, 0))),    # full contraction: a scalar
    ("TensorDot", (6, 4), ((2, 3), (4,), (), ())),               # no contraction: outer product
    ("Kron", (3, 2), ((3,), (2,))),
    ("BSpline", (5, 1), (0,)),
    ("BSpline", (6, 1), (3,)),
    ("Max", (1,), ()),
    # complex ops (formula/complex.py): a complex scalar (real dim 2) against a vector
    ("ComplexMult", (2, 6), ()),
    ("ComplexDivide", (6, 2), ()),
    ("ComplexDivide", (2, 6), ()),
    ("ComplexAdd", (2, 6), ()),
    ("ComplexSubtract", (6, 2), ()),
    # soft-DTW (formula/softdtw.py): one-element series, and x longer than y (the
    # recursion then runs along y)
    ("SoftDTW_SqDist", (1, 3, 1), ()),
    ("SoftDTW_SqDist", (5, 2, 1), ()),
    ("SoftDTW_SqDist_Grad", (5, 2, 1), ()),
]

# Ops whose derivative rule refuses, by design and with a clear error (said in their
# module): the generic derivative test leaves them out. SoftDTW_SqDist_Grad: second
# derivatives of soft-DTW.
VJP_REFUSED = {"SoftDTW_SqDist_Grad"}


def default_dims(spec):
    return spec.example_dims if spec.example_dims is not None else (3,) * spec.arity


CASES = [(name, default_dims(spec), spec.example_params)
         for name, spec in OPS.items() if name != "Var"] + EXTRA_CASES


def case_id(case):
    name, dims, params = case
    return f"{name}-{'x'.join(map(str, dims)) or 'cst'}" + (f"-{params}" if params else "")


def categories(arity, shift=0):
    return [CATS[(k + shift) % 3] for k in range(arity)]


def sample(domain, cat, dim, g, n, m):
    """Values of a variable: (n, dim) for i, (m, dim) for j, (dim,) for a parameter."""
    shape = {CAT_I: (n, dim), CAT_J: (m, dim), CAT_P: (dim,)}[cat]
    return SAMPLERS[domain](g, shape)


def as_ij(x, cat):
    """The (N or 1, M or 1, dim) view of an argument that the references broadcast."""
    if cat == CAT_I:
        return x[:, None, :]
    return x[None, :, :] if cat == CAT_J else x[None, None, :]
