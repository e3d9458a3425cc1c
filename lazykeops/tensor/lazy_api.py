"""The public LazyTensor entry points of one framework: the pinned class and Vi, Vj, Pm,
and its ComplexLazyTensor (`complex_class(LazyTensor)`, made with it)."""

from ..formula.node import CAT_I, CAT_J, CAT_P
from . import lazy_derivatives, lazy_linear, lazy_pykeops, lazy_reduce  # noqa: F401  (attach methods)
from .lazy import LazyTensor
from . import lazy_softdtw  # noqa: F401,E402  (attaches softdtw_sqdist)
from . import lazy_complex_reduce  # noqa: F401,E402  (attaches the complex reductions)
from .lazy_complex import complex_class, pinned_complex_class  # noqa: F401  (re-exported)


def make_lazy_api(framework):
    """(LazyTensor class, Vi, Vj, Pm) accepting only `framework`'s arrays."""
    cls = type("LazyTensor", (LazyTensor,), {"framework_name": framework,
                                               "__module__": f"lazykeops.{framework}"})
    pinned_complex_class(cls, framework)  # LazyTensor(complex array) gives one of these

    def helper(cat, axis):
        def make(x, dim=None):
            if isinstance(x, int) and not isinstance(x, bool) and dim is not None:
                return cls.symbolic(x, dim, cat)
            if cat == CAT_P:
                return cls(x)
            return cls(x, axis=axis)

        return make

    Vi, Vj, Pm = helper(CAT_I, 0), helper(CAT_J, 1), helper(CAT_P, None)
    Vi.__doc__ = "Vi(x): i-indexed LazyTensor of a (N, D) array; Vi(ind, dim): symbolic."
    Vj.__doc__ = "Vj(y): j-indexed LazyTensor of a (M, D) array; Vj(ind, dim): symbolic."
    Pm.__doc__ = "Pm(p): parameter LazyTensor of a (D,) array or number; Pm(ind, dim): symbolic."
    return cls, Vi, Vj, Pm
