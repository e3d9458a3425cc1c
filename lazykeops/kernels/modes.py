"""`kernel_product`'s modes, argument checks and Genred cache (framework-agnostic).

`kernel_product_with(Genred, params, x, y, bs, mode, backend)` checks the call against
the Kernel (feature spaces, dims, gammas, the mode's extra arrays) before anything is
compiled, renders the kernel and the mode into ONE formula (language.py), and runs it
with the front end's Genred: so torch autograd differentiates it w.r.t. x, y, b and gamma
like any Genred. The Genred is cached per (Genred class, kernel, mode, dims, gamma kinds),
so a repeated call re-parses nothing.

The modes follow KeOps 1.x (k the kernel, c = log k, all reductions over j):
    sum                    a_i = sum_j k_ij b_j
    lse                    a_i = log sum_j exp(c_ij + b_j)
    log_scaled             a_i = sum_j exp(c_ij + a_log_i + b_log_j) b_j
    log_scaled_lse         a_i = log sum_j exp(c_ij + a_log_i + b_log_j + b_j)
    log_scaled_barycenter  a_i = sum_j exp(c_ij + a_log_i + b_log_j) (b_j - b2_i)
    lse_mult_i             a_i = log sum_j exp(a_i' c_ij + b_j)
    sinkhorn_primal        a_i = sum_j (u_i + v_j - 1) exp(c_ij + a_log_i + b_log_j)
    sinkhorn_cost          a_i = sum_j -c_ij exp(c_ij + a_log_i + b_log_j)
"""

import difflib
from collections import namedtuple

from ..errors import LazyKeOpsError
from ..runtime.genred import BACKENDS
from .language import Kernel, kernel_error, render

# One extra array of a mode: its name (in messages and docs), its formula alias, whether
# it is indexed by i or j, and its dim ("E" = any, but the same for every "E" of the mode).
Extra = namedtuple("Extra", "name alias index dim")
Mode = namedtuple("Mode", "reduction formula extras")

_B, _A_LOG, _B_LOG = Extra("b", "B", "j", "E"), Extra("a_log", "A_LOG", "i", 1), \
    Extra("b_log", "B_LOG", "j", 1)
_SCALED = "Exp({c} + A_LOG + B_LOG)"

MODES = {
    "sum": Mode("Sum", "{k} * B", (_B,)),
    "lse": Mode("LogSumExp", "{c} + B", (_B,)),
    "log_scaled": Mode("Sum", f"{_SCALED} * B", (_B, _A_LOG, _B_LOG)),
    "log_scaled_lse": Mode("LogSumExp", "{c} + A_LOG + B_LOG + B", (_B, _A_LOG, _B_LOG)),
    "log_scaled_barycenter": Mode("Sum", f"{_SCALED} * (B - B2)",
                                  (_B, _A_LOG, _B_LOG, Extra("b2", "B2", "i", "E"))),
    "lse_mult_i": Mode("LogSumExp", "A * {c} + B", (_B, Extra("a", "A", "i", 1))),
    "sinkhorn_primal": Mode("Sum", f"(U + V - 1) * {_SCALED}",
                            (_A_LOG, _B_LOG, Extra("u", "U", "i", 1), Extra("v", "V", "j", 1))),
    "sinkhorn_cost": Mode("Sum", f"-{{c}} * {_SCALED}", (_A_LOG, _B_LOG)),
}

_CACHE = {}


def _shape(a):
    """The shape of an array argument, or None for something that is not an array."""
    shape = getattr(a, "shape", None)
    return tuple(shape) if shape is not None else None


def _lookup_mode(mode, kernel):
    if mode not in MODES:
        close = difflib.get_close_matches(str(mode), list(MODES), n=2)
        hint = f"did you mean {' or '.join(close)}?" if close else \
            f"expected one of {', '.join(MODES)}"
        raise kernel_error(kernel.name, f"unknown kernel_product mode {mode!r}; {hint}")
    return MODES[mode]


def _kernel_of(params):
    if not isinstance(params, dict) or "id" not in params:
        raise LazyKeOpsError("kernel_product's params must be a dict with an 'id' entry "
                             "(a Kernel, e.g. Kernel('gaussian(x,y)')) and a 'gamma' entry")
    kernel = params["id"]
    return Kernel(kernel) if isinstance(kernel, str) else kernel


def _array(kernel, what, a, index, sizes):
    """Check that `a` is an (..., N, D) array (N shared by every i-indexed argument, M by
    every j-indexed one) and return D."""
    shape = _shape(a)
    letter = "N" if index == "i" else "M"
    if shape is None or len(shape) < 2:
        got = shape if shape is not None else type(a).__name__
        raise kernel_error(kernel.name, f"argument {what} must be an array of shape "
                           f"({letter}, D), indexed by {index}; got {got}")
    n, owner = sizes.get(index, (None, None))
    if n is not None and shape[-2] != n:
        raise kernel_error(kernel.name, f"argument {what} has {letter} = {shape[-2]} rows "
                           f"but {owner} has {n}: every {index}-indexed argument must agree")
    sizes.setdefault(index, (shape[-2], what))
    return shape[-1]


def _features(kernel, x, y, sizes):
    """The feature spaces: one (x, y) per pair of the kernel, with equal dims."""
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    ys = tuple(y) if isinstance(y, (tuple, list)) else (y,)
    pairs = ", ".join(f"({a},{b})" for a, b in kernel.spaces)
    for name, given in (("x", xs), ("y", ys)):
        if len(given) != len(kernel.spaces):
            raise kernel_error(kernel.name, f"has {len(kernel.spaces)} feature space(s) "
                               f"{pairs}, so {name} must be a tuple of {len(kernel.spaces)} "
                               f"array(s); got {len(given)}")
    dims = []
    for (xn, yn), xa, ya in zip(kernel.spaces, xs, ys):
        dx, dy = _array(kernel, f"'{xn}'", xa, "i", sizes), _array(kernel, f"'{yn}'", ya,
                                                                   "j", sizes)
        if dx != dy:
            raise kernel_error(kernel.name, f"variables '{xn}' and '{yn}' have dims {dx} "
                               f"and {dy}; they must be equal")
        dims.append(dx)
    return xs, ys, dims


def _gamma_list(kernel, gamma):
    """One gamma (or None) per gamma slot, from a single gamma shared by all the slots,
    a tuple with one entry per slot, or (as KeOps 1.x) one per named kernel, None for
    those that take no gamma."""
    calls = kernel.calls
    if not isinstance(gamma, (tuple, list)):
        if gamma is not None and not kernel.n_gammas:
            raise kernel_error(kernel.name, "takes no gamma (no named kernel in it has a "
                               "parameter); pass 'gamma': None")
        return [gamma] * kernel.n_gammas
    if len(gamma) == len(calls):
        for call, g in zip(calls, gamma):
            if call.slot is None and g is not None:
                raise kernel_error(kernel.name, f"'{call.name}' takes no gamma, but its "
                                   f"entry of the gamma tuple is not None")
        return [g for call, g in zip(calls, gamma) if call.slot is not None]
    if len(gamma) == kernel.n_gammas:
        return list(gamma)
    names = ", ".join(c.name for c in calls if c.slot is not None)
    raise kernel_error(kernel.name, f"gamma is a tuple of {len(gamma)}, expected "
                       f"{kernel.n_gammas} (one per kernel that takes a gamma: {names}) "
                       f"or {len(calls)} (one per kernel, None where it takes none)")


def _gammas(kernel, gamma, dims, sizes):
    """The distinct gamma arrays, and for each slot: (index among them, dim, category)."""
    inputs, slots = [], []
    for call, g in zip((c for c in kernel.calls if c.slot is not None),
                       _gamma_list(kernel, gamma)):
        what = f"gamma of '{call.name}'"
        shape = () if isinstance(g, (int, float)) and not isinstance(g, bool) else _shape(g)
        if g is None:
            raise kernel_error(kernel.name, f"'{call.name}' needs a gamma, but params['gamma'] "
                               "is missing or None there")
        if shape is None:
            raise kernel_error(kernel.name, f"{what} must be a 1-dim array (e.g. "
                               f"torch.tensor([0.5])), got {type(g).__name__}")
        if len(shape) == 2:  # one gamma per y_j, as in KeOps 1.x
            gdim, cat = _array(kernel, what, g, "j", sizes), "Vj"
        elif len(shape) <= 1:
            gdim, cat = (shape[0] if shape else 1), "Pm"
        else:
            raise kernel_error(kernel.name, f"{what} has shape {shape}: expected (K,) for "
                               "a parameter or (M, K) for one gamma per y_j")
        d = dims[call.space]
        allowed = (1, d, d * d)
        if gdim not in allowed:
            raise kernel_error(kernel.name, f"{what} has dim {gdim}, but its variables have "
                               f"dim {d}: expected 1 (isotropic), {d} (diagonal) or {d * d} "
                               "(full D x D matrix)")
        index = next((k for k, h in enumerate(inputs) if h is g), None)
        if index is None:
            index = len(inputs)
            inputs.append(g)
        slots.append((index, gdim, cat))
    return inputs, tuple(slots)


def _extras(kernel, mode_name, mode, bs, sizes):
    if len(bs) != len(mode.extras):
        names = ", ".join(e.name for e in mode.extras)
        raise kernel_error(kernel.name, f"mode '{mode_name}' takes {len(mode.extras)} "
                           f"array(s) after x and y ({names}), got {len(bs)}")
    dims, shared = [], None
    for e, b in zip(mode.extras, bs):
        d = _array(kernel, f"{e.name} (mode '{mode_name}')", b, e.index, sizes)
        if e.dim == "E":
            if shared is not None and d != shared[1]:
                raise kernel_error(kernel.name, f"{e.name} has dim {d} but {shared[0]} has "
                                   f"dim {shared[1]}; mode '{mode_name}' needs them equal")
            shared = shared or (e.name, d)
        elif d != e.dim:
            raise kernel_error(kernel.name, f"{e.name} must have dim {e.dim} in mode "
                               f"'{mode_name}' (shape ({'N' if e.index == 'i' else 'M'}, "
                               f"{e.dim})), got dim {d}")
        dims.append(d)
    return tuple(dims)


def _build(genred_class, kernel, mode, dims, slots, ngammas, extra_dims):
    """The Genred of one kernel, mode and set of dims."""
    aliases = [f"G{k} = {cat}({k}, {gdim})" for k, (_, gdim, cat) in
               sorted({s[0]: s for s in slots}.items())]
    pos = ngammas
    spaces = []
    for (xn, yn), d in zip(kernel.spaces, dims):
        aliases += [f"{xn} = Vi({pos}, {d})", f"{yn} = Vj({pos + 1}, {d})"]
        spaces.append((xn, yn, d))
        pos += 2
    for k, (e, d) in enumerate(zip(mode.extras, extra_dims)):
        aliases.append(f"{e.alias} = V{e.index}({pos + k}, {d})")
    k, c = render(kernel, spaces, [(f"G{index}", gdim) for index, gdim, _ in slots])
    formula = mode.formula.format(k=k, c=c)
    return genred_class(formula, aliases, reduction_op=mode.reduction, axis=1)


def kernel_product_with(genred_class, params, x, y, bs, mode=None, backend=None):
    """kernel_product on the front end of `genred_class` (torch or numpy Genred)."""
    kernel = _kernel_of(params)
    if not isinstance(kernel, Kernel):
        raise LazyKeOpsError(f"params['id'] must be a Kernel or a kernel string, got "
                             f"{type(kernel).__name__}")
    mode = mode if mode is not None else params.get("mode", "sum")
    backend = backend if backend is not None else params.get("backend", "auto")
    spec = _lookup_mode(mode, kernel)
    if backend not in BACKENDS:
        raise kernel_error(kernel.name, f"backend must be one of {BACKENDS}, got {backend!r}")
    sizes = {}
    xs, ys, dims = _features(kernel, x, y, sizes)
    gammas, slots = _gammas(kernel, params.get("gamma"), dims, sizes)
    extra_dims = _extras(kernel, mode, spec, bs, sizes)
    key = (genred_class, kernel.name, mode, tuple(dims), slots, extra_dims)
    routine = _CACHE.get(key)
    if routine is None:
        routine = _CACHE[key] = _build(genred_class, kernel, spec, dims, slots, len(gammas),
                                       extra_dims)
    args = [*gammas]
    for xa, ya in zip(xs, ys):
        args += [xa, ya]
    return routine(*args, *bs, backend=backend)
