"""KernelSolve for torch tensors, differentiable (routines/kernel_solve.py does the solve).

With a = (alpha Id + K(theta))^-1 b and a cotangent g on a (K symmetric, as the solve
assumes): the gradient for b is K_inv g, itself a KernelSolve (so it is differentiable
again), and for every other variable theta it is the gradient of <-K_inv g, K(theta) a>,
i.e. the backward of the Genred K evaluated at b = a with cotangent -K_inv g. That
backward runs through autograd.call on fresh views of the inputs, one per argument
position, so that a tensor passed twice (K(x, x)) gets each position's share once.
"""

import torch

from .autograd import call
from ..routines.kernel_solve import KernelSolveCore
from ..runtime.options import bind_positional

# pykeops.torch.KernelSolve's positional arguments after axis.
_MORE = ("dtype_acc", "use_double_acc", "sum_scheme", "enable_chunks", "rec_multVar_highdim",
         "dtype", "cuda_type", "use_fast_math")


class KernelSolve:
    """(alpha Id + K) \\ b for torch tensors, as pykeops.torch.KernelSolve:

    KernelSolve(formula, aliases, varinvalias, axis=0, dtype_acc="auto",
                use_double_acc=False, sum_scheme="auto", enable_chunks=True,
                rec_multVar_highdim=None, dtype=None, cuda_type=None, use_fast_math=True)
        (*args, backend="auto", device_id=-1, alpha=1e-10, eps=1e-6, ranges=None)

    `formula` is linear in the variable named varinvalias; the call's argument in that
    slot is the right-hand side b, and the result has its shape. Differentiable with
    respect to every tensor argument (see the module docstring)."""

    framework = "torch"

    def __init__(self, formula, aliases, varinvalias, axis=0, *more, **options):
        options = bind_positional(_MORE, more, options, f"KernelSolve('{formula}')")
        self.solver = KernelSolveCore(formula, aliases, varinvalias, axis, options,
                                      self.framework)

    def __call__(self, *args, **options):
        backend, device_id, alpha, eps, ranges = self.solver.call_options(options)
        ranges = self.solver.check(args, backend, device_id, ranges)
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                           for a in args):
            return _Solve.apply(self.solver, alpha, eps, backend, ranges, *args)
        return self.solver.solve(args, alpha, eps, backend, ranges)


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, solver, alpha, eps, backend, ranges, *args):
        a = solver.solve(args, alpha, eps, backend, ranges)
        ctx.solver, ctx.alpha, ctx.eps, ctx.backend = solver, alpha, eps, backend
        ctx.ranges = ranges
        ctx.is_tensor = [isinstance(x, torch.Tensor) for x in args]
        ctx.python_args = [None if t else x for x, t in zip(args, ctx.is_tensor)]
        ctx.save_for_backward(*[x for x in args if isinstance(x, torch.Tensor)], a)
        return a

    @staticmethod
    def backward(ctx, g):
        solver, pos = ctx.solver, ctx.solver.pos
        saved = iter(ctx.saved_tensors)
        args = [next(saved) if t else x for x, t in zip(ctx.python_args, ctx.is_tensor)]
        a = next(saved)
        rhs = list(args)
        rhs[pos] = g
        kinv_g = _Solve.apply(solver, ctx.alpha, ctx.eps, ctx.backend, ctx.ranges, *rhs)
        needs = ctx.needs_input_grad[5:]
        grads = [None] * len(args)
        if needs[pos]:
            grads[pos] = kinv_g
        others = [k for k, need in enumerate(needs) if need and k != pos]
        if others:
            create = torch.is_grad_enabled()  # a double backward is asked for
            with torch.enable_grad():
                inputs = list(args)
                inputs[pos] = a
                for k in others:
                    x = args[k]
                    inputs[k] = x.view_as(x) if x.requires_grad else x.detach().requires_grad_()
                ka = call(solver.core, inputs, backend=ctx.backend, ranges=ctx.ranges)
                found = torch.autograd.grad(ka, [inputs[k] for k in others], -kinv_g,
                                            create_graph=create, allow_unused=True)
            for k, grad in zip(others, found):
                grads[k] = grad if grad is not None else torch.zeros_like(args[k])
        return (None, None, None, None, None, *grads)
