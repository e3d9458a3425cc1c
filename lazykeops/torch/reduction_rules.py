"""The derivative rules of every reduction, for torch autograd: `reduction_backward` and
`reduction_jvp`, called by torch/autograd.py's GenredFunction (whose docstring summarises
the rules). Gradient reductions run through `call` again, so they are differentiable too."""

import torch

from ..errors import LazyKeOpsError
from ..formula import CAT_I, CAT_J, CAT_P, make, var
from ..formula import autodiff
from ..formula.aliases import Alias
from ..formula.reductions import REDUCTIONS
from ..runtime.cuda import build_kernels
from ..runtime.genred import GenredCore
from .autograd import call

DUAL_SUM = REDUCTIONS["DualSum"]


# ------------------------------------------------------------------ helpers
def _out_cat(core):
    return CAT_I if core.axis == 1 else CAT_J


def _derived(core, key, build):
    derived = core.derived.get(key)
    if derived is None:
        derived = core.derived[key] = build()
    return derived


def _core_like(core, formulas, aliases, reduction, axis, k=None):
    return GenredCore(formulas, aliases, reduction, axis, k, framework=core.framework,
                      text=f"derivative of {core.text}", **core.options)


def _extra(aliases, dim, cat):
    """A new alias after `aliases` (for cotangents, outputs, dummies)."""
    return Alias(f"extra{len(aliases)}", len(aliases), cat, dim)


def _sum_to(grad, arg):
    """Sum the broadcast dims of `grad` so that it has the shape of argument `arg`."""
    shape = tuple(arg.shape)
    while grad.dim() > max(len(shape), 1):
        grad = grad.sum(0)
    target = shape if shape else (1,)
    for k, (g, a) in enumerate(zip(grad.shape, target)):
        if a == 1 and g != 1:
            grad = grad.sum(k, keepdim=True)
    return grad.reshape(shape)


def _concat(nodes):
    result = nodes[0]
    for n in nodes[1:]:
        result = make("Concat", result, n)
    return result


def _split(result, dims):
    parts, start = [], 0
    for d in dims:
        parts.append(result[..., start:start + d])
        start += d
    return parts


def _lse_of(core, args, ranges):
    """[the log-sum-exp of the formula] for reductions whose derivatives need it, else []."""
    if not core.reduction.uses_lse:
        return []
    lse = _derived(core, "lse", lambda: _core_like(
        core, core.formulas[:1], core.aliases, "LogSumExp", core.axis))
    return [call(lse, args, ranges=ranges)]


def _lse_alias(core, aliases):
    """The output-indexed alias that carries _lse_of's value, appended to `aliases`."""
    if not core.reduction.uses_lse:
        return None
    L = _extra(aliases, 1, _out_cat(core))
    aliases.append(L)
    return L


def _is_float(a):
    return isinstance(a, torch.Tensor) and a.is_floating_point()


# ------------------------------------------------------------------ backward
def reduction_backward(core, args, outs, grad_outputs, needs, ranges=None):
    """Gradients of `core`'s inputs; `ranges`: the forward's block-sparse ranges, which
    every gradient reduction takes too (the half of its own axis: runtime/ranges.py)."""
    kind = core.reduction.kind
    if kind == "dual":
        return _dualsum_backward(core, args, outs, grad_outputs, needs, ranges)
    wanted = [p for p, (a, need) in enumerate(zip(args, needs)) if need and _is_float(a)]
    grads = [None] * len(args)
    if not wanted or kind == "indices":
        return grads
    G = grad_outputs[0]
    if G is None:
        return grads
    if kind == "selection":
        contributions = _selection_backward(core, args, G, wanted, ranges)
    else:
        contributions = _sumlike_backward(core, args, outs[0], G, wanted, ranges)
    for p, g in contributions.items():
        grads[p] = _sum_to(g, args[p])
    return grads


def _sumlike_backward(core, args, out, G, wanted, ranges):
    """Gradients of Sum, LogSumExp, SumSoftMaxWeight: when both sides need one, a single
    DualSum pass computes the output-side sums over j and the reduced-side sums over i."""
    out_cat = _out_cat(core)
    extras_data = [G, out, *_lse_of(core, args, ranges)]
    row_side = tuple(p for p in wanted if core.aliases[p].cat in (out_cat, CAT_P))
    col_side = tuple(p for p in wanted if p not in row_side)
    if ("cuda" if G.is_cuda else "cpu") not in DUAL_SUM.devices:  # two Sums instead
        if G.is_cuda and row_side and col_side:  # their first builds side by side
            build_kernels([_grad_core(core, row_side, ()), _grad_core(core, (), col_side)],
                          core.backend.dtype_name(G), core.backend.target(core.backend.device(G)),
                          ranges is not None)
        rows = _one_side(core, args, extras_data, row_side, (), ranges) if row_side else None
        cols = _one_side(core, args, extras_data, (), col_side, ranges) if col_side else None
    else:
        values = _one_side(core, args, extras_data, row_side, col_side, ranges)
        if row_side and col_side:
            rows, cols = values
        else:
            rows, cols = (values, None) if row_side else (None, values)
    result = {}
    for group, block in ((row_side, rows), (col_side, cols)):
        if group:
            for p, g in zip(group, _split(block, [core.aliases[p].dim for p in group])):
                result[p] = g.sum(-2) if core.aliases[p].cat == CAT_P else g
    return result


def _one_side(core, args, extras_data, row_side, col_side, ranges):
    return call(_grad_core(core, row_side, col_side), [*args, *extras_data], ranges=ranges)


def _grad_core(core, row_side, col_side):
    return _derived(core, ("grad", row_side, col_side),
                    lambda: _sumlike_grad_core(core, row_side, col_side))


def _sumlike_grad_core(core, row_side, col_side):
    aliases = list(core.aliases)
    out_cat, nvals = _out_cat(core), core.nvals
    G = _extra(aliases, nvals, out_cat)
    aliases.append(G)
    OUT = _extra(aliases, nvals, out_cat)
    aliases.append(OUT)
    L = _lse_alias(core, aliases)
    f, w = core.formulas[0], (core.formulas[1] if len(core.formulas) > 1 else None)

    def gradients(group):
        return _concat([core.reduction.gradient_formula(
            f, w, _var(core.aliases[p]), _var(G), _var(OUT), _var(L) if L else None)
            for p in group])

    if row_side and col_side:
        return _core_like(core, [gradients(row_side), gradients(col_side)], aliases,
                          "DualSum", core.axis)
    if row_side:
        return _core_like(core, [gradients(row_side)], aliases, "Sum", core.axis)
    return _core_like(core, [gradients(col_side)], aliases, "Sum", 1 - core.axis)


def _dualsum_backward(core, args, outs, grad_outputs, needs, ranges):
    """DualSum is two Sums: differentiate each with its own output cotangent."""
    grads = [None] * len(args)
    for side, (formula, axis) in enumerate(((core.formulas[0], core.axis),
                                            (core.formulas[1], 1 - core.axis))):
        if grad_outputs[side] is None:
            continue
        single = _derived(core, ("side", side), lambda: _core_like(
            core, [formula], core.aliases, "Sum", axis))
        for p, g in enumerate(reduction_backward(single, args, [outs[side]],
                                                 [grad_outputs[side]], needs, ranges)):
            if g is not None:
                grads[p] = g if grads[p] is None else grads[p] + g
    return grads


def _var(alias):
    return var(alias.pos, alias.dim, alias.cat)


def _selection_backward(core, args, G, wanted, ranges):
    """Gradient through the selected pairs of Min/Max/KMin (see the module docstring).
    A slot with no term (index -1: fewer than K terms below +inf, or a block-sparse row
    with none) passes no gradient."""
    f = core.formulas[0]
    companion = _derived(core, "indices", lambda: _core_like(
        core, core.formulas, core.aliases, core.reduction.companion, core.axis, core.k))
    with torch.no_grad():
        _, idx = companion(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args],
                           ranges=ranges)
    empty = idx < 0  # outside no_grad: G's masking is differentiable (double backward)
    G, idx = G.masked_fill(empty, 0), idx.clamp(min=0)
    k, dim = core.k or 1, f.dim
    out_cat = _out_cat(core)
    batch = idx.shape[:-2]
    nout = idx.shape[-2]
    result = {}
    for d in range(dim):
        sel = idx[..., d::dim].reshape(*batch, nout * k)           # selected j for each row
        g_d = G[..., d::dim].reshape(*batch, nout * k, 1)
        diag_args = [_gather_arg(a, alias, sel, k, out_cat, batch)
                     for a, alias in zip(args, core.aliases)]
        diag_core = _derived(core, ("select", d, tuple(wanted)),
                             lambda: _selection_grad_core(core, wanted, d))
        dummy = G.new_zeros(1, 1)
        values = call(diag_core, [*diag_args, g_d, dummy])
        for p, g in zip(wanted, _split(values, [core.aliases[p].dim for p in wanted])):
            g = _scatter_back(g, args[p], core.aliases[p], sel, k, nout, out_cat, batch)
            result[p] = g if p not in result else result[p] + g
    return result


def _gather_arg(a, alias, sel, k, out_cat, batch):
    """An argument as seen on the selected pairs: one row per (output row, selection)."""
    if alias.cat == CAT_P or not isinstance(a, torch.Tensor):
        return a
    if alias.cat == out_cat:
        return a.repeat_interleave(k, dim=-2) if k > 1 else a
    if tuple(a.shape[:-2]) != tuple(batch):
        a = a.expand(*batch, *a.shape[-2:])
    return torch.gather(a, -2, sel.unsqueeze(-1).expand(*sel.shape, a.shape[-1]))


def _scatter_back(g, arg, alias, sel, k, nout, out_cat, batch):
    if alias.cat == CAT_P:
        return g.sum(-2)
    if alias.cat == out_cat:
        return g.reshape(*g.shape[:-2], nout, k, g.shape[-1]).sum(-2) if k > 1 else g
    m = arg.shape[-2]
    zeros = g.new_zeros(*g.shape[:-2], m, g.shape[-1])
    return zeros.scatter_add(-2, sel.unsqueeze(-1).expand(*sel.shape, g.shape[-1]), g)


def _selection_grad_core(core, wanted, d):
    out_cat, f = _out_cat(core), core.formulas[0]
    # On the selected pairs every variable is indexed like the output.
    aliases = [a if a.cat == CAT_P else Alias(a.name, a.pos, out_cat, a.dim)
               for a in core.aliases]
    mapping = {_var(a): _var(b) for a, b in zip(core.aliases, aliases) if a != b}
    f_diag = autodiff.substitute(f, mapping) if mapping else f
    G = _extra(aliases, 1, out_cat)
    aliases.append(G)
    dummy = _extra(aliases, 1, CAT_J if out_cat == CAT_I else CAT_I)
    aliases.append(dummy)
    e_d = make("ElemT", _var(G), params=(f.dim, d)) if f.dim > 1 else _var(G)
    nodes = [autodiff.grad(f_diag, _var(aliases[p]), e_d) for p in wanted]
    return _core_like(core, [_concat(nodes)], aliases, "Sum", core.axis)


# ------------------------------------------------------------------ forward mode
def reduction_jvp(core, args, outs, tangents, ranges=None):
    """Tangent of the output for input tangents (sum-like reductions)."""
    kind = core.reduction.kind
    if kind == "indices":
        return None
    if kind != "sum":
        raise LazyKeOpsError(f"forward-mode derivatives (jvp, jacfwd, hessian) of "
                             f"{core.reduction.name} reductions are not supported yet; "
                             "use reverse mode")
    used = [p for p, t in enumerate(tangents) if t is not None and _is_float(args[p])]
    if not used:
        return torch.zeros_like(outs[0])
    jvp_core = _derived(core, ("jvp", tuple(used)), lambda: _jvp_core(core, used))
    extra = [outs[0], *_lse_of(core, args, ranges)]
    tangent_data = [tangents[p].expand_as(args[p]) if isinstance(args[p], torch.Tensor)
                    else tangents[p] for p in used]
    # Tangents may lack batch dims of size 1 that some primal input has: match the output.
    return torch.broadcast_to(call(jvp_core, [*args, *tangent_data, *extra], ranges=ranges),
                              outs[0].shape)


def _jvp_core(core, used):
    aliases = list(core.aliases)
    tangent_vars = []
    for p in used:
        t = _extra(aliases, core.aliases[p].dim, core.aliases[p].cat)
        aliases.append(t)
        tangent_vars.append((p, t))
    out_cat = _out_cat(core)
    OUT = _extra(aliases, core.nvals, out_cat)
    aliases.append(OUT)
    L = _lse_alias(core, aliases)

    def directional(formula):
        total = None
        for p, t in tangent_vars:
            total = autodiff.add(total, autodiff.diff(formula, _var(core.aliases[p]), _var(t)))
        return total if total is not None else make("Zero", params=(formula.dim,))

    f = core.formulas[0]
    w = core.formulas[1] if len(core.formulas) > 1 else None
    node = core.reduction.tangent(f, w, directional(f), directional(w) if w is not None else None,
                                  _var(OUT), _var(L) if L else None)
    return _core_like(core, [node], aliases, "Sum", core.axis)
