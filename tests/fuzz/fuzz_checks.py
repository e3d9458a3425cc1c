"""The checks of the differential fuzz: one run of a group's formulas against dense torch.

This module owns `Group` (one reduction, axis, batch dims, dtype, sizes, inputs and
formulas), `Outcome` (what one run said), `forward_run` (concatenate the formulas, reduce
them once through the public API, compare values and indices with the dense reference
and attribute each bad component to its formula), `grad_run` (torch.autograd.grad of the
reduction against the same on the dense reference) and `grad_ready` (whether a formula's
gradient is well-defined on the inputs).
"""

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import torch

import lazykeops.torch as lkt
from fuzz_dense import D, Dense, EPS, F32, F64
from fuzz_inputs import Inputs
from fuzz_ops import Expr, to_lazy
from fuzz_reductions import (BASE, CALLS, INDICES_ONLY, WITH_INDICES, gather, magnitude,
                             mismatches, reference, tolerance)

LazyTensor = lkt.LazyTensor


@dataclass
class Outcome:
    """What one run (one kernel) said: per formula, the first bad entry (or None); or an
    error for the whole run."""

    bad: dict = field(default_factory=dict)      # formula index -> detail
    error: Optional[str] = None
    compared: Counter = field(default_factory=Counter)   # formula index -> entries
    skipped: int = 0
    call: str = ""


@dataclass
class Group:
    index: int
    kind: str            # "forward" or "grad"
    reduction: str
    axis: int
    dtype: str
    batch: tuple
    n: int
    m: int
    k: Optional[int]
    seed: int            # the inputs' seed
    rng: random.Random
    inputs: Optional[Inputs] = None
    options: dict = field(default_factory=dict)    # sum_scheme= and dtype_acc= of the call
    spelling: tuple = (0, False)                   # the CALLS entry; dim counted from the end
    formulas: list = field(default_factory=list)   # concatenated (the weights, if weighted)
    f: Optional[Expr] = None                       # the shared formula of weighted groups
    exceptional: str = ""                          # the NaN / inf entries of the inputs

    def describe(self):
        k = f", K={self.k}" if self.k else ""
        options = "".join(f", {key}={value}" for key, value in self.options.items())
        nan = f"; NaN/inf inputs: {self.exceptional}" if self.exceptional else ""
        return (f"group {self.index} ({self.kind} {self.reduction}, axis={self.axis}, "
                f"batch={self.batch}, {self.dtype}, N={self.n}, M={self.m}{k}{options}; "
                f"inputs seed {self.seed}{nan})")


def assemble(group, formulas, ev):
    """(LazyTensor F, LazyTensor W or None, dense F, dense W or None, batch ndim): the
    concatenation of `formulas` (of the weights, for weighted reductions)."""
    memo = {}
    parts = [to_lazy(e, group.inputs.lazy, memo) for e in formulas]
    cat = parts[0] if len(parts) == 1 else LazyTensor.cat(parts)
    values = [ev(e) for e in formulas]
    shapes = [v.ref.shape[:-1] for v in values]
    if group.f is not None:
        fd = ev(group.f)
        shapes.append(fd.ref.shape[:-1])
    lead = torch.broadcast_shapes(*shapes)
    dense = D(*[torch.cat([getattr(v, p).expand(*lead, v.ref.shape[-1]) for v in values], -1)
                for p in ("ref", "low", "frag", "mag")])
    if group.f is None:
        return cat, None, dense, None, len(lead) - 2
    flazy = to_lazy(group.f, group.inputs.lazy, memo)
    fdense = D(*[getattr(fd, p).expand(*lead, 1) for p in ("ref", "low", "frag", "mag")])
    return flazy, cat, fdense, dense, len(lead) - 2


def reduce_lazy(group, F, W, nb, k):
    """Call the reduction through the public API; returns (spelling, result). The
    spelling is the group's (re-runs of part of a group call the same method)."""
    choice, from_end = group.spelling
    spelling, fn = CALLS[group.reduction][choice]
    d = F.nbatchdims + group.axis
    if F.nbatchdims != nb or from_end:
        d = group.axis - 3   # counted from the end: the same for any batch dims
    text = spelling.format(d=d, k=k)
    if group.options:
        extra = ", ".join(f"{key}={value!r}" for key, value in group.options.items())
        text = f"{text[:-1]}, {extra})"
    return text, fn(F, W, d, k, group.options)


def forward_run(group, formulas):
    """Reduce the concatenation of `formulas` once and compare it with the dense one."""
    out = Outcome()
    ev = Dense(group.inputs.env, group.dtype)
    try:
        F, W, Fd, Wd, nb = assemble(group, formulas, ev)
        ax, base = nb + group.axis, BASE[group.reduction]
        n_red = Fd.ref.shape[ax]
        k = min(group.k, n_red) if group.k else None
        out.call, result = reduce_lazy(group, F, W, nb, k)
    except Exception as err:  # noqa: BLE001  (any error is a finding)
        out.error = f"{type(err).__name__}: {err}"
        out.call = out.call or group.reduction
        return out
    exp64 = reference(base, Fd.ref, None if Wd is None else Wd.ref, ax, k)
    exp32 = reference(base, Fd.low, None if Wd is None else Wd.low, ax, k)
    scale = magnitude(base, Fd.mag, None if Wd is None else Wd.mag, ax)
    tol = tolerance(exp64, exp32, scale, group.dtype)
    frag = Fd.frag if Wd is None else (Fd.frag | Wd.frag)
    skip = frag.any(ax)
    if base in ("min", "max", "kmin") and not group.exceptional:
        skip = skip | ~torch.isfinite(Fd.ref).all(ax)
    if base == "kmin":
        skip = skip.unsqueeze(-2).expand(exp64.shape)
    values, indices = _split_result(group.reduction, result)
    bad = torch.zeros(exp64.shape, dtype=torch.bool)
    problem = _check_outputs(group, values, indices, exp64, base)
    if problem:
        out.error = problem
        return out
    if values is not None:
        got = values.detach().to(F64).reshape(exp64.shape)
        bad |= mismatches(got, exp64, tol, skip)
    if indices is not None:
        bad |= _index_mismatches(indices.reshape(exp64.shape), Fd, exp64, ax, n_red, base, tol,
                                 skip, group.dtype)
    _attribute(out, formulas, bad, skip, exp64, values, indices, tol)
    return out


def _split_result(reduction, result):
    if reduction in INDICES_ONLY:
        return None, result
    if reduction in WITH_INDICES:
        return result
    return result, None


def _check_outputs(group, values, indices, exp, base):
    """A message when the outputs' types, dtypes or shapes are wrong."""
    shape = tuple(exp.shape)
    if base == "kmin" and shape[-1] == 1:
        shape = shape[:-1]  # pykeops: (..., N, K) for a scalar formula
    for name, t, dtype in (("values", values, getattr(torch, group.dtype)),
                           ("indices", indices, torch.int64)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            return f"{name}: expected a tensor, got {type(t).__name__}"
        if t.dtype != dtype or tuple(t.shape) != shape:
            return f"{name}: expected {dtype} of shape {shape}, got {t.dtype} {tuple(t.shape)}"
    return None


def _index_mismatches(idx, Fd, exp64, ax, n_red, base, tol, skip, dtype):
    valid = (idx >= 0) & (idx < n_red)
    safe = idx.clamp(0, n_red - 1)
    kmin = base == "kmin"
    picked64, picked32 = gather(Fd.ref, safe, ax, kmin), gather(Fd.low, safe, ax, kmin)
    tol = tol + 8 * (picked32.to(F64) - picked64).abs() * (EPS[dtype] / EPS["float32"])
    bad = mismatches(picked64, exp64, tol, skip) | (~valid & ~skip)
    if kmin and idx.shape[-2] > 1:  # the K indices of one output are distinct
        same = idx.unsqueeze(-2) == idx.unsqueeze(-3)           # (..., K, K, D)
        bad |= (same.sum(-2) > 1) & ~skip
    return bad


def _attribute(out, formulas, bad, skip, exp, values, indices, tol):
    """Map bad components back to formulas; record the first bad entry of each."""
    start = 0
    for n, e in enumerate(formulas):
        sl = slice(start, start + e.dim)
        start += e.dim
        compared = int((~skip[..., sl]).sum())
        out.compared[n] = compared
        out.skipped += int(skip[..., sl].sum())
        where = bad[..., sl].nonzero()
        if len(where):
            pos = tuple(int(p) for p in where[0])
            full = pos[:-1] + (pos[-1] + sl.start,)
            got, exp, tol = [], exp.detach(), tol.detach()
            if values is not None:
                got.append(f"value {float(values.reshape(exp.shape)[full]):.10g}")
            if indices is not None:
                got.append(f"index {int(indices.reshape(exp.shape)[full])}")
            out.bad[n] = (f"at {full}: expected {float(exp[full]):.10g}, got "
                          f"{', '.join(got)} (tolerance {float(tol[full]):.3g}; "
                          f"{len(where)} bad entries)")


def grad_run(group, formulas):
    """torch.autograd.grad of the reduction of the concatenation of `formulas` with
    respect to every variable, against the same on the dense reference."""
    out = Outcome()
    ev = Dense(group.inputs.grad_env(), group.dtype)
    everything = formulas + ([group.f] if group.f is not None else [])
    names = sorted(frozenset().union(*[e.leaves for e in everything]))
    try:
        F, W, Fd, Wd, nb = assemble(group, formulas, ev)
        ax, base = nb + group.axis, BASE[group.reduction]
        k = min(group.k, Fd.ref.shape[ax]) if group.k else None
        out.call, result = reduce_lazy(group, F, W, nb, k)
        values = result[0] if isinstance(result, tuple) else result
        exp = {p: reference(base, getattr(Fd, p), None if Wd is None else getattr(Wd, p), ax, k)
               for p in ("ref", "low")}
        seed_gen = torch.Generator().manual_seed(group.seed + 1)
        G = torch.randn(exp["ref"].shape, generator=seed_gen, dtype=F64)
        args = [group.inputs.leaves[n].arg for n in names]
        got = torch.autograd.grad(values, args, G.to(values.dtype).reshape(values.shape),
                                  allow_unused=True)
    except Exception as err:  # noqa: BLE001
        out.error = f"{type(err).__name__}: {err}"
        return out
    refs = {p: torch.autograd.grad(exp[p], [getattr(ev.env[n], p) for n in names],
                                   G.to(exp[p].dtype), allow_unused=True)
            for p in ("ref", "low")}
    # One scale for all variables: a gradient that cancels to ~0 (d/dx of x.normalize()
    # in dim 1) is computed from terms as large as the others.
    scale = max([float(r.abs().max()) for r in refs["ref"] if r is not None] + [0.0])
    for n, name, g, r64, r32 in zip(range(len(names)), names, got, refs["ref"], refs["low"]):
        shape = group.inputs.leaves[name].shape
        g = torch.zeros(shape, dtype=F64) if g is None else g.to(F64).reshape(shape)
        r64 = torch.zeros(shape, dtype=F64) if r64 is None else r64
        r32 = torch.zeros(shape, dtype=F32) if r32 is None else r32
        tol = tolerance(r64, r32, scale, group.dtype) * 2
        bad = mismatches(g, r64, tol, torch.zeros(shape, dtype=torch.bool))
        out.compared[n] = g.numel()
        where = bad.nonzero()
        if len(where):
            pos = tuple(int(p) for p in where[0])
            out.bad[n] = (f"d/d{name} at {pos}: expected {float(r64[pos]):.10g}, got "
                          f"{float(g[pos]):.10g} (tolerance {float(tol[pos]):.3g}; "
                          f"{len(where)} bad entries)")
    return out


def grad_ready(group, e):
    """Whether a formula's gradient is well-defined on these inputs: no fragile entry and,
    for Min/Max/KMin, no near-tie along the reduced axis."""
    ev = Dense(group.inputs.env, group.dtype)
    value = ev(e)
    if bool(value.frag.any()):
        return False
    base = BASE[group.reduction]
    if base not in ("min", "max", "kmin") or e is group.f:
        return True
    ax = value.ref.dim() - 3 + group.axis
    if value.ref.shape[ax] < 2:
        return True
    k = min((group.k or 1) + 1, value.ref.shape[ax])
    v = value.ref if base != "max" else -value.ref
    top = torch.topk(v, k, dim=ax, largest=False).values
    gaps = top.diff(dim=ax)
    return bool((gaps > 1e-4 * (1 + v.abs().amax())).all())
