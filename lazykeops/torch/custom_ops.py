"""torch.compile support: every reduction as one torch.library custom op.

`lazykeops::reduction(str key, str backend, Tensor[] args) -> Tensor[]` runs the GenredCore
that `key` describes on `args` (Genred's layout). The key is the core's full description
as JSON text (torch/op_keys.py), so a compiled graph that holds it is self-contained:
`core_of(key)` finds the core in this process, or rebuilds it from the text.

- Fake (meta) tensors: `_fake` computes the output shapes with the runtime's pure
  signature step (runtime/signature.py), without a kernel or an allocation.
- Autograd: `_backward` calls the same rules as eager autograd (torch/reduction_rules.py
  through torch/autograd.py); while it runs, the gradient reductions it asks for are
  routed through this op again (`genred.ROUTE`), so that AOTAutograd traces them into
  the backward graph.
- Dynamo: `compiled_reduce` (a LazyTensor reduction) and `call_op` (Genred, through
  torch/autograd.py's `call`) run only while Dynamo traces (torch.compiler.is_compiling());
  eager calls never come here. What Dynamo must not trace (interned formula nodes, the
  core's construction) happens inside `_lazy_key`, which Dynamo calls once at trace time
  and whose result, a string, it keeps as a constant (torch._dynamo.assume_constant_result);
  a Genred's core was keyed when the Genred was built.
- Dynamo reads a LazyTensor expression as plain Python objects; what it could not read
  is worked around where it arises: `tensor op LazyTensor` (torch/lazy_dispatch.py), and
  state set at import rather than on first use (torch/genred.py, torch/autograd.py).
"""

import torch

from ..errors import LazyKeOpsError
from ..formula.node import CAT_I, CAT_J
from ..runtime import genred
from ..runtime.launch import check_k
from ..runtime.signature import call_signature
from ..tensor import lazy_reduce
from .op_keys import build_nodes, core_key, core_of

@torch._dynamo.assume_constant_result
def _lazy_key(entries, roots, table, spec):
    """The key of a LazyTensor reduction described by `compiled_reduce` (constants)."""
    nodes = build_nodes(entries)
    formulas = tuple(nodes[r] for r in roots)
    return core_key(lazy_reduce._core(formulas, table, spec, "torch"))


@torch._dynamo.assume_constant_result
def _core_key(core):
    """The key of a core met while Dynamo traces and not keyed at construction (torch
    2.11's Dynamo cannot pass a GenredCore here: torch Genred keys its core when built)."""
    return core_key(core)


# ------------------------------------------------------------------ the op
@torch.library.custom_op("lazykeops::reduction", mutates_args=())
def reduction(key: str, backend: str, args: list[torch.Tensor]) -> list[torch.Tensor]:
    """The outputs of core_of(key) on `args`, as a list (values, indices or columns)."""
    return list(_as_tuple(core_of(key).compute(*args, backend=backend)))


@reduction.register_fake
def _fake(key, backend, args):
    core = core_of(key)
    _, dtype, device = core._as_arrays(args)  # the checks of an eager call, on metadata
    sig = call_signature(core, [a.shape for a in args], dtype, device)
    if core.k is not None:
        check_k(core, sig)
    vals, idx, cols = sig.output_shapes(core)
    like = args[0]
    shapes = [(vals, like.dtype), (idx, torch.int64), (cols, like.dtype)]
    return [like.new_empty(shape, dtype=dtype) for shape, dtype in shapes if shape]


def _setup_context(ctx, inputs, output):
    key, backend, args = inputs
    ctx.key, ctx.backend, ctx.nargs = key, backend, len(args)
    ctx.save_for_backward(*args, *output)


def _backward(ctx, grads):
    from .reduction_rules import reduction_backward  # it imports autograd: late

    saved = ctx.saved_tensors
    args, outs = list(saved[:ctx.nargs]), list(saved[ctx.nargs:])
    core = core_of(ctx.key)
    needs = ctx.needs_input_grad[2]
    genred.ROUTE.append(call_op)
    try:
        result = reduction_backward(core, args, outs, _output_grads(core, grads), needs)
    finally:
        genred.ROUTE.pop()
    return None, None, list(result)


def _output_grads(core, grads):
    """One cotangent per differentiable output (None for indices, as eager passes)."""
    grads = list(grads)
    if core.nidx and core.nvals:
        grads[1] = None
    return grads


reduction.register_autograd(_backward, setup_context=_setup_context)


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def call_op(core, args, backend="auto", out=None, ranges=None):
    """core(*args) through the custom op: tensors only (Python numbers converted), the
    outputs as the core returns them. Block-sparse ranges are not traced yet."""
    if ranges is not None:
        raise LazyKeOpsError(f"block-sparse ranges cannot be used under torch.compile yet "
                             f"(formula '{core.text}'): call this reduction outside the "
                             f"compiled function, or without ranges")
    if out is not None:
        raise LazyKeOpsError(f"out= cannot be used under torch.compile (formula "
                             f"'{core.text}')")
    like = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if like is None:
        return core(*args, backend=backend)  # the eager error: no array
    tensors = [a if isinstance(a, torch.Tensor) else
               torch.as_tensor(a, dtype=like.dtype, device=like.device) for a in args]
    key = getattr(core, "_op_key", None)  # set by torch Genred's constructor
    outs = reduction(key if key is not None else _core_key(core), backend, tensors)
    return outs[0] if len(outs) == 1 else tuple(outs)


def compiled_reduce(roots, spec, shape_of, backend, out):
    """A LazyTensor reduction while Dynamo traces: the expression described by Python
    constants (post-order entries, the same walk and variable order as lower()), its key,
    and the custom op on the leaves' data. Runs inside Dynamo: plain Python only."""
    seen, entries, leaves = [], [], []

    def visit(t):
        for k, s in enumerate(seen):
            if s is t:
                return k
        if t.op is None:
            entry = ("Var", (len(leaves), t.inner_dim, t.category), ())
            leaves.append(t)
        else:
            entry = (t.op, t.params, tuple([visit(a) for a in t.args]))
        seen.append(t)
        entries.append(entry)
        return len(entries) - 1

    roots_at = tuple([visit(r) for r in roots])
    table = [(leaf.category, leaf.inner_dim) for leaf in leaves]
    like = next(leaf.data for leaf in leaves if leaf.framework is not None)
    data = [lazy_reduce._genred_layout(leaf, leaf.data if leaf.framework is not None else
                                       torch.tensor(leaf.data, dtype=like.dtype,
                                                    device=like.device))
            for leaf in leaves]
    for category, size in ((CAT_I, shape_of.ni), (CAT_J, shape_of.nj)):
        if size is None:  # pykeops: with no variable indexed by i (or j), that size is 1
            table.append((category, 1))
            data.append(like.new_zeros(1, 1))
    if out is not None:
        raise LazyKeOpsError("out= cannot be used under torch.compile (a reduction of a "
                             f"LazyTensor of shape {roots[0].shape})")
    outs = reduction(_lazy_key(tuple(entries), roots_at, tuple(table), spec), backend, data)
    return outs[0] if len(outs) == 1 else tuple(outs)
