"""Reductions: what each one outputs, which C++ policy runs it, and its dense reference.

A reduction turns the values f(x_i, y_j) for all j into one output row for each i. The
C++ policies (init, tile accumulation, merge, finalize) live in csrc/lk_reductions.h;
this module owns their Python-side description: the output widths (values and int64
indices), whether an extra formula (weights) or K is needed, and a dense torch reference
that the tests compare against.
"""

from dataclasses import dataclass
from typing import Callable

from ..errors import LazyKeOpsError
from .lazy_torch import torch


@dataclass(frozen=True)
class ReductionSpec:
    """name: pykeops spelling; policy: C++ template, formatted with D (formula dim),
    E (weight dim) and K; weight: "none", "optional" or "required" second formula;
    uses_k: needs opt_arg K; outputs(D, E, K) -> (value width, index width);
    reference(F, W, K) -> (values, indices) for F of shape (N, M, D), reducing over M."""

    name: str
    policy: str
    weight: str
    uses_k: bool
    outputs: Callable
    reference: Callable
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


def _flat_k(t):
    """(N, K, D) -> (N, K * D), component d of the k-th value at k * D + d."""
    return t.reshape(t.shape[0], -1)


def _lse_reference(F, W, K):
    if W is None:
        return torch.logsumexp(F, dim=1), None
    m = F.max(dim=1, keepdim=True).values
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m[:, 0] + torch.log((torch.exp(F - m) * W).sum(dim=1)), None


def _softmax_reference(F, W, K):
    return (torch.softmax(F, dim=1) * W).sum(dim=1), None


def _kmin(F, K):
    return torch.topk(F, K, dim=1, largest=False, sorted=True)


REDUCTIONS = {}


def _register(spec):
    REDUCTIONS[spec.name] = spec


_register(ReductionSpec("Sum", "lk::SumRed<{D}, {scheme}>", "none", False,
                        lambda D, E, K: (D, 0), lambda F, W, K: (F.sum(dim=1), None)))
_register(ReductionSpec("LogSumExp", "lk::LogSumExpRed<{D}, {E}>", "optional", False,
                        lambda D, E, K: (E or D, 0), _lse_reference))
_register(ReductionSpec("SumSoftMaxWeight", "lk::SoftMaxRed<{E}>", "required", False,
                        lambda D, E, K: (E, 0), _softmax_reference))
for _name, _max, _vals, _idx in (("Min", 0, 1, 0), ("Max", 1, 1, 0),
                                 ("ArgMin", 0, 0, 1), ("ArgMax", 1, 0, 1),
                                 ("Min_ArgMin", 0, 1, 1), ("Max_ArgMax", 1, 1, 1)):
    def _ref(F, W, K, _max=_max, _vals=_vals, _idx=_idx):
        res = F.max(dim=1) if _max else F.min(dim=1)
        return (res.values if _vals else None), (res.indices if _idx else None)

    _register(ReductionSpec(
        _name, f"lk::ArgExtremumRed<{{D}}, {_max}, {_vals}, {_idx}>", "none", False,
        lambda D, E, K, _vals=_vals, _idx=_idx: (D * _vals, D * _idx), _ref))

for _name, _vals, _idx in (("KMin", 1, 0), ("ArgKMin", 0, 1), ("KMin_ArgKMin", 1, 1)):
    def _ref(F, W, K, _vals=_vals, _idx=_idx):
        res = _kmin(F, K)
        return (_flat_k(res.values) if _vals else None), (_flat_k(res.indices) if _idx else None)

    _register(ReductionSpec(
        _name, f"lk::KMinRed<{{D}}, {{K}}, {_vals}, {_idx}>", "none", True,
        lambda D, E, K, _vals=_vals, _idx=_idx: (D * K * _vals, D * K * _idx), _ref))

# Internal, for gradients (torch/reduction_rules.py): formula summed over j, formula2 over i.
_register(ReductionSpec("DualSum", "lk::DualSumRed<{D}, {E}>", "required", False,
                        lambda D, E, K: (D, 0),
                        lambda F, W, K: (F.sum(dim=1), W.sum(dim=0)), columns=True))

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
