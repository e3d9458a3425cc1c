"""Symbolic derivatives of LazyTensors: `grad` (reverse mode) and `diff` (forward mode),
as pykeops's Grad and Diff; reductions expand them (tensor/lazy_reduce.py, `lower`). The
methods are attached to LazyTensor at the bottom of the module."""

from ..errors import LazyKeOpsError
from .lazy import LazyTensor
from .lazy_shapes import merge_into


def grad(self, other, gradin):
    """The LazyTensor Grad(self, other, gradin): the gradient of <self, gradin> with
    respect to the variable `other` (a LazyTensor built from an array, or a symbolic
    Vi/Vj/Pm)."""
    return _derivative(self, "Grad", other, gradin,
                       other.inner_dim if isinstance(other, LazyTensor) else 0)


def diff(self, other, diffin):
    """The LazyTensor Diff(self, other, diffin): the derivative of self at the variable
    `other` in the direction diffin (forward mode)."""
    return _derivative(self, "Diff", other, diffin, self.inner_dim)


def _derivative(self, kind, v, direction, dim):
    if not isinstance(v, LazyTensor) or v.op is not None or v.category is None:
        raise LazyKeOpsError(f"{kind} of a LazyTensor of shape {self.shape} is taken with "
                             "respect to a variable LazyTensor (made from an array or "
                             f"by Vi/Vj/Pm), got {v!r}")
    args = (self, v, LazyTensor._wrap(direction))
    expected = self.inner_dim if kind == "Grad" else v.inner_dim
    if args[2].inner_dim != expected:
        raise LazyKeOpsError(f"{kind} of a LazyTensor of shape {self.shape} with respect "
                             f"to one of shape {v.shape} needs a direction of dim "
                             f"{expected}, got shape {args[2].shape}")
    out = type(self).__new__(type(self))
    out.op, out.args, out.inner_dim = kind, args, dim
    merge_into(out, args)
    return out


LazyTensor.grad = grad
LazyTensor.diff = diff
