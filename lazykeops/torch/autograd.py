"""torch autograd for every reduction: backward, double backward and torch.func.

`call(core, args)` runs a GenredCore through `GenredFunction` when an input requires a
gradient. The backward pass builds gradient formulas symbolically (formula/autodiff.py,
each reduction's rules in formula/reductions.py) and runs them through the same
pipeline, with `call` again: so the backward is itself differentiable and higher orders
just work. The rules, per
reduction, are in torch/reduction_rules.py:

- Sum, LogSumExp, SumSoftMaxWeight: for the arguments indexed like the output and the
  parameters, one Sum reduction over the same axis of the concatenated gradients; for
  the arguments indexed by the reduced index, one Sum reduction over the other axis.
  Parameters and broadcast batch dims are then summed in torch.
- Min, Max, KMin and the variants returning values: the gradient flows through the
  selected pairs only. Their indices (from the ArgMin-like companion reduction) gather
  the reduced-side variables; the gradient formula is evaluated on those pairs (a Sum
  over a dummy axis of length 1), and scattered back with index_add.
- ArgMin, ArgMax, ArgKMin return int64 indices: no gradient.

torch.func: `vmap` maps onto the engine's batch dimensions; grad, vjp and jacrev use the
backward; jvp (hence jacfwd and hessian) is implemented for the sum-like reductions.

torch.compile: `call` sends the reduction to the custom op of torch/custom_ops.py, whose
registered backward runs the same rules.
"""

import torch

from ..errors import LazyKeOpsError
from ..formula import CAT_P
from ..runtime.genred import ROUTE
from ..runtime.launch import launch, prepare
from ..runtime.ranges import block_sparse
from ..tensor import lazy_reduce

_is_compiling = torch.compiler.is_compiling


try:  # tensors wrapped by torch.func transforms (grad, vmap, ...) hide requires_grad
    from torch._C._functorch import is_functorch_wrapped_tensor as _is_wrapped
except ImportError:  # older torch: no torch.func transforms to support
    def _is_wrapped(tensor):
        return False


def is_recorded(a):
    """Whether autograd or a torch.func transform must see this input."""
    return isinstance(a, torch.Tensor) and (a.requires_grad or _is_wrapped(a))


def call(core, args, backend="auto", out=None, sig=None, ranges=None):
    """core(*args), recorded by autograd when a torch input requires a gradient (or is
    seen through a torch.func transform). `sig`: the call's Signature when the caller has
    checked the arguments (the LazyTensor front end), so that the forward only prepares
    and launches. `ranges`: pykeops's block-sparse 6-tuple (or a BlockSparse), which the
    gradient reductions reuse, each with the half of its own axis. Under torch.compile,
    and inside the custom op's backward (ROUTE), the call goes through the custom op
    (torch/custom_ops.py) instead."""
    if ROUTE:
        return ROUTE[-1](core, args, backend, out, ranges)
    if _is_compiling():
        from .custom_ops import call_op

        return call_op(core, args, backend, out, ranges)
    for a in args:  # a plain loop: this runs on every small call
        if is_recorded(a):
            break
    else:
        return _run(core, args, backend, out, sig, ranges)
    if torch.is_grad_enabled() or any(isinstance(a, torch.Tensor) and _is_wrapped(a)
                                      for a in args):
        if out is not None:
            raise LazyKeOpsError(f"out= cannot be used when an input of formula "
                                 f"'{core.text}' requires a gradient")
        return GenredFunction.apply(core, backend, sig, ranges, *args)
    return _run(core, args, backend, out, sig, ranges)


def _run(core, args, backend, out, sig, ranges=None):
    """The one prepare -> launch path, after the signature step unless `sig` is given."""
    if sig is None:
        return core.compute(*args, backend=backend, out=out, ranges=ranges)
    if ranges is not None:
        ranges = block_sparse(ranges, core.backend, sig.device, f"formula '{core.text}'")
    return launch(core, sig, prepare(core, sig, args), out, backend, ranges)


class GenredFunction(torch.autograd.Function):
    @staticmethod
    def forward(core, backend, sig, ranges, *args):
        return _run(core, args, backend, None, sig, ranges)

    @staticmethod
    def setup_context(ctx, inputs, output):
        core, backend, _, ranges, *args = inputs
        ctx.core, ctx.backend, ctx.ranges = core, backend, ranges
        ctx.is_tensor = [isinstance(a, torch.Tensor) for a in args]
        ctx.python_args = [None if t else a for a, t in zip(args, ctx.is_tensor)]
        outs = output if isinstance(output, tuple) else (output,)
        tensors = [a for a in args if isinstance(a, torch.Tensor)] + list(outs)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)
        if core.nidx:
            ctx.mark_non_differentiable(outs[-1])
        ctx.set_materialize_grads(False)  # a missing output cotangent stays None

    @staticmethod
    def backward(ctx, *grad_outputs):
        args, outs = _saved(ctx)
        needs = ctx.needs_input_grad[4:]
        from .reduction_rules import reduction_backward  # it calls `call`: imported late

        grads = reduction_backward(ctx.core, args, outs, grad_outputs, needs, ctx.ranges)
        return (None, None, None, None, *grads)

    @staticmethod
    def jvp(ctx, *tangents):
        args, outs = _saved(ctx)
        from .reduction_rules import reduction_jvp

        return reduction_jvp(ctx.core, args, outs, tangents[4:], ctx.ranges)

    @staticmethod
    def vmap(info, in_dims, core, backend, sig, ranges, *args):  # new shapes: a new signature
        out = GenredFunction.apply(core, backend, None, ranges,
                                   *vmapped_args(core, args, in_dims[4:]))
        return out, ((0, 0) if isinstance(out, tuple) else 0)


def vmapped_args(core, args, in_dims):
    """Arguments of a vmapped call as one more leading batch dimension of the engine.

    The mapped dim goes first, then size-1 dims up to the call's own batch rank: without
    them, a mapped argument without batch dims would line up its mapped dim with another
    argument's batch dim (jacfwd over x of a formula whose y has batch dims)."""
    inner = [1 if alias.cat == CAT_P else 2 for alias in core.aliases]
    own_rank = [max((a.dim() if d is None else a.dim() - 1) - n, 0) if isinstance(a, torch.Tensor)
                else 0 for a, d, n in zip(args, in_dims, inner)]
    rank = max(own_rank, default=0)
    moved = []
    for a, d, n, own in zip(args, in_dims, inner, own_rank):
        if d is None:
            moved.append(a)
            continue
        a = a.movedim(d, 0)
        if a.dim() == 1:  # a 0-d parameter becomes (B,): make it (B, 1), dim-1 values
            a = a.unsqueeze(-1)
        moved.append(a.reshape(a.shape[0], *([1] * (rank - own)), *a.shape[1:]))
    return moved


# The LazyTensor front end's torch hooks, set now rather than on first use inside a function
# that torch.compile traces (Dynamo would guard on the empty list and recompile).
lazy_reduce._IS_RECORDED[:] = [is_recorded]
lazy_reduce.is_compiling = _is_compiling


def _saved(ctx):
    saved = list(ctx.saved_tensors)
    args = []
    for is_tensor, python in zip(ctx.is_tensor, ctx.python_args):
        args.append(saved.pop(0) if is_tensor else python)
    return args, saved
