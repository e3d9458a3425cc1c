"""Reductions, each defined once: what it outputs, the C++ policy that runs it, its
derivatives, how its outputs may be sliced, where it runs, and its dense reference.

A reduction turns the values f(x_i, y_j) for all j into one output row for each i. Its
C++ half (the accumulator, its folding and finalisation) is the policy of the same name
in csrc/lk_reductions.h; `ReductionSpec.policy` gives the policy's template and
parameters. The Python half, one `ReductionSpec` per reduction below:

- derivatives, by `kind`:
  "sum" (Sum, LogSumExp, SumSoftMaxWeight): the gradient with respect to a variable v is
  a Sum reduction of Grad(f, v, cf) + Grad(w, v, cw), with the cotangents (cf, cw) of
  the formula f and the weights w given by `cotangents(f, w, G, OUT, L)` (G the output
  cotangent, OUT the forward output, L the log-sum-exp of f, for `uses_lse` reductions:
  all three output-indexed variables); the forward-mode tangent of the output is the Sum
  of `tangent(f, w, df, dw, OUT, L)`, df and dw the directional derivatives of f and w.
  "selection" (Min, Max, KMin and their variants with values): the output cotangent goes
  to the selected pairs only, found by the `companion` reduction that returns the
  indices (torch/reduction_rules.py gathers them and scatters back).
  "indices" (ArgMin, ArgMax, ArgKMin): int64 outputs, no gradient.
  "dual" (DualSum, internal): two Sums, each differentiated on its own.
- `slices`: the output's components are independent, each computed from the same
  component of the last formula (the weights when there are some), so that a wide output
  can be computed a slice of components at a time (runtime/cuda.py).
- `devices`: the engines whose policies implement it.
"""

from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import LazyKeOpsError
from . import autodiff
from .algebra import mul, op, sub
from .lazy_torch import torch


@dataclass(frozen=True)
class ReductionSpec:
    """name: pykeops spelling; policy(D, E, K, scheme, negated) -> (C++ template, its
    parameters) for formula dim D, weight dim E (0: none), K, the Sum scheme's C++ type
    and, for DualSum, whether the columns are the negated rows; weight: "none",
    "optional" or "required" second formula; uses_k: needs opt_arg K;
    outputs(D, E, K) -> (value width, index width); reference(F, W, K) -> (values,
    indices) for F of shape (N, M, D), reducing over M; the rest: see the module
    docstring."""

    name: str
    policy: Callable
    weight: str
    uses_k: bool
    outputs: Callable
    reference: Callable
    kind: str
    cotangents: Optional[Callable] = None
    tangent: Optional[Callable] = None
    uses_lse: bool = False
    companion: Optional[str] = None
    slices: bool = False
    devices: tuple = ("cpu", "cuda")
    columns: bool = False  # DualSum: the second formula is summed over the other index

    def check(self, dim, wdim, k, formula):
        if self.weight == "none" and wdim is not None:
            raise LazyKeOpsError(f"reduction {self.name} takes no second formula "
                                 f"(formula2) in formula '{formula}'")
        if self.weight == "required" and wdim is None:
            raise LazyKeOpsError(f"reduction {self.name} needs a second formula "
                                 f"(formula2, the weights) in formula '{formula}'")
        if wdim is not None and dim != 1 and not self.columns:
            raise LazyKeOpsError(f"reduction {self.name} with weights needs a formula of "
                                 f"dimension 1, got dimension {dim} for '{formula}'")
        if self.uses_k and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise LazyKeOpsError(f"reduction {self.name} needs opt_arg K, a positive "
                                 f"integer, got {k!r} for formula '{formula}'")

    def check_target(self, target, formula):
        if target not in self.devices:
            raise LazyKeOpsError(f"reduction {self.name} has no {target} kernel (it runs on "
                                 f"{', '.join(self.devices)}) for formula '{formula}'")

    def cpp_policy(self, D, E, K, scheme, negated=False):
        """The C++ type of the policy, e.g. `lk::SumRed<3, lk::BlockSum>`."""
        template, params = self.policy(D, E, K, scheme, negated)
        return f"{template}<{', '.join(str(p) for p in params)}>"

    def sliced_formula(self, nformulas):
        """Which formula's components a slice of the output takes, or None."""
        return nformulas - 1 if self.slices else None

    def gradient_formula(self, f, w, v, G, OUT=None, L=None):
        """The formula whose Sum over the reduced index is the gradient with respect to v
        (kind "sum")."""
        cf, cw = self.cotangents(f, w, G, OUT, L)
        result = autodiff.grad(f, v, cf)
        if w is not None:
            result = op("Add", result, autodiff.grad(w, v, cw))
        return result


REDUCTIONS = {}


def _register(spec):
    REDUCTIONS[spec.name] = spec


# ------------------------------------------------------------------ sums
def _lse_reference(F, W, K):
    if W is None:
        return torch.logsumexp(F, dim=1), None
    m = F.max(dim=1, keepdim=True).values
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m[:, 0] + torch.log((torch.exp(F - m) * W).sum(dim=1)), None


def _lse_cotangents(f, w, G, OUT, L):
    share = mul(G, op("Exp", sub(f, OUT)))  # the softmax weight of each term
    if w is None:
        return share, None
    # With weights, dim E: one share per output component.
    return (op("Sum", mul(share, w)) if w.dim > 1 else mul(share, w)), share


def _lse_tangent(f, w, df, dw, OUT, L):
    share = op("Exp", sub(f, OUT))
    if w is None:  # d out = sum_j softmax_j df_j
        return mul(share, df)
    # d out_k = sum_j exp(f_j - out_k) (w_jk df_j + dw_jk)
    return mul(share, op("Add", mul(w, df), dw))


def _softmax_cotangents(f, w, G, OUT, L):
    p = op("Exp", sub(f, L))
    return mul(p, sub(op("Scalprod", w, G), op("Scalprod", OUT, G))), mul(p, G)


def _softmax_tangent(f, w, df, dw, OUT, L):
    # d out = sum_j p_j (dw_j + (w_j - out) df_j)
    return mul(op("Exp", sub(f, L)), op("Add", dw, mul(sub(w, OUT), df)))


_register(ReductionSpec(
    "Sum", lambda D, E, K, scheme, negated: ("lk::SumRed", (D, scheme)), "none", False,
    lambda D, E, K: (D, 0), lambda F, W, K: (F.sum(dim=1), None), "sum",
    cotangents=lambda f, w, G, OUT, L: (G, None),
    tangent=lambda f, w, df, dw, OUT, L: df, slices=True))
_register(ReductionSpec(
    "LogSumExp", lambda D, E, K, scheme, negated: ("lk::LogSumExpRed", (D, E)), "optional",
    False, lambda D, E, K: (E or D, 0), _lse_reference, "sum",
    cotangents=_lse_cotangents, tangent=_lse_tangent, slices=True))
_register(ReductionSpec(
    "SumSoftMaxWeight", lambda D, E, K, scheme, negated: ("lk::SoftMaxRed", (E,)),
    "required", False, lambda D, E, K: (E, 0),
    lambda F, W, K: ((torch.softmax(F, dim=1) * W).sum(dim=1), None), "sum",
    cotangents=_softmax_cotangents, tangent=_softmax_tangent, uses_lse=True, slices=True))

# ------------------------------------------------------------------ selections
for _name, _max, _vals, _idx in (("Min", 0, 1, 0), ("Max", 1, 1, 0),
                                 ("ArgMin", 0, 0, 1), ("ArgMax", 1, 0, 1),
                                 ("Min_ArgMin", 0, 1, 1), ("Max_ArgMax", 1, 1, 1)):
    def _ref(F, W, K, _max=_max, _vals=_vals, _idx=_idx):
        res = F.max(dim=1) if _max else F.min(dim=1)
        return (res.values if _vals else None), (res.indices if _idx else None)

    _register(ReductionSpec(
        _name, lambda D, E, K, scheme, negated, _p=(_max, _vals, _idx):
            ("lk::ArgExtremumRed", (D, *_p)), "none", False,
        lambda D, E, K, _vals=_vals, _idx=_idx: (D * _vals, D * _idx), _ref,
        "selection" if _vals else "indices",
        companion=("Max_ArgMax" if _max else "Min_ArgMin") if _vals else None, slices=True))


def _flat_k(t):
    """(N, K, D) -> (N, K * D), component d of the k-th value at k * D + d."""
    return t.reshape(t.shape[0], -1)


for _name, _vals, _idx in (("KMin", 1, 0), ("ArgKMin", 0, 1), ("KMin_ArgKMin", 1, 1)):
    def _ref(F, W, K, _vals=_vals, _idx=_idx):
        res = torch.topk(F, K, dim=1, largest=False, sorted=True)
        return (_flat_k(res.values) if _vals else None), (_flat_k(res.indices) if _idx else None)

    _register(ReductionSpec(
        _name, lambda D, E, K, scheme, negated, _p=(_vals, _idx): ("lk::KMinRed", (D, K, *_p)),
        "none", True, lambda D, E, K, _vals=_vals, _idx=_idx: (D * K * _vals, D * K * _idx),
        _ref, "selection" if _vals else "indices",
        companion="KMin_ArgKMin" if _vals else None))

# ------------------------------------------------------------------ internal
# For gradients (torch/reduction_rules.py): formula summed over j, formula2 over i, in one
# pass of the CPU engine (its column buffers have no CUDA counterpart).
_register(ReductionSpec(
    "DualSum", lambda D, E, K, scheme, negated:
        ("lk::DualSumRed", (D, E, 0, -1) if negated else (D, E)),
    "required", False, lambda D, E, K: (D, 0),
    lambda F, W, K: (F.sum(dim=1), W.sum(dim=0)), "dual", devices=("cpu",), columns=True))

# pykeops spellings that differ only in case or by a suffix.
ALIASES = {name.lower(): name for name in REDUCTIONS}
ALIASES.update({"argkmin": "ArgKMin", "kmin_argkmin": "KMin_ArgKMin",
                "logsumexp": "LogSumExp"})


def lookup(name, formula=""):
    """The ReductionSpec named `name` (case-insensitive, pykeops spellings accepted)."""
    canon = ALIASES.get(str(name).lower().removesuffix("_reduction"))
    if canon is None:
        raise LazyKeOpsError(f"unknown reduction '{name}' for formula '{formula}'; expected "
                             f"one of {', '.join(REDUCTIONS)}")
    return REDUCTIONS[canon]
