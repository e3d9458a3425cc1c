"""How each reduction passes its output cotangent back to the formula values.

For a reduction out_i = Red_j f(x_i, y_j) (and weights w for LogSumExp and
SumSoftMaxWeight), the gradient with respect to a variable v is a Sum reduction of
Grad(f, v, cf) + Grad(w, v, cw), where cf and cw are the cotangents of f and w at (i, j).
They depend on the output cotangent G, the forward output OUT and, for SumSoftMaxWeight,
the log-sum-exp L of f; all three enter the gradient formula as output-indexed variables.

Selection reductions (Min, Max, KMin and their Arg variants) pass G to the selected terms
only: that is done by gathering the selected pairs (torch/reduction_rules.py), not here.
"""

from ..errors import LazyKeOpsError
from . import autodiff
from .algebra import mul, op, sub

SUM_LIKE = ("Sum", "LogSumExp", "SumSoftMaxWeight")
SELECTIONS = ("Min", "Max", "Min_ArgMin", "Max_ArgMax", "KMin", "KMin_ArgKMin")
INDICES_ONLY = ("ArgMin", "ArgMax", "ArgKMin")


def cotangents(reduction, f, w, G, OUT, L):
    """(cf, cw) for a sum-like reduction; cw is None without weights."""
    if reduction == "Sum":
        return G, None
    if reduction == "LogSumExp":
        if w is None:
            return mul(G, op("Exp", sub(f, OUT))), None
        share = mul(G, op("Exp", sub(f, OUT)))  # dim E: one per output component
        return op("Sum", mul(share, w)) if w.dim > 1 else mul(share, w), share
    if reduction == "SumSoftMaxWeight":
        p = op("Exp", sub(f, L))
        return mul(p, sub(op("Scalprod", w, G), op("Scalprod", OUT, G))), mul(p, G)
    raise LazyKeOpsError(f"internal error: {reduction} is not a sum-like reduction")


def gradient_formula(reduction, f, w, v, G, OUT=None, L=None):
    """The formula whose Sum over the reduced index is the gradient with respect to v."""
    cf, cw = cotangents(reduction, f, w, G, OUT, L)
    result = autodiff.grad(f, v, cf)
    if w is not None:
        result = op("Add", result, autodiff.grad(w, v, cw))
    return result
