"""Reductions of complex LazyTensors and the complex side of real ones.

A reduction of a ComplexLazyTensor is the real reduction of its (re, im) pairs (its `_real`
twin, lazy_complex.py), turned back into a complex array: torch.view_as_complex keeps
autograd, so gradients reach complex inputs as torch defines them; numpy gets a .view.
`out=` complex arrays are passed as the real view of the same memory, `call=False` gives a
reduction that converts when called. Sum is the only reduction with a complex meaning
(others are refused in lazy_complex.py); SumSoftMaxWeight takes a complex weight.

Real LazyTensors gain `real2complex`, `imag2complex`, `exp1j` and `is_complex`; their
+ - * / hand complex operands (complex numbers, arrays, ComplexLazyTensors) to the complex
operation, `K @ v` takes a complex v, `sumsoftmaxweight` a complex weight. All of it is
attached at the bottom, as lazy_reduce.py attaches its methods.
"""

from ..errors import LazyKeOpsError
from . import lazy_linear, lazy_reduce
from ..runtime.backends import get_backend
from .lazy import COMPLEX_DTYPES, LazyTensor, _framework_of, _is_complex_number
from .lazy_complex import (_COMPLEX_OF, _REAL_OPERANDS, ComplexLazyTensor, _operand,
                           _pairs_of_array, _twin, _unary)


# ------------------------------------------------------------------ reductions
def complex_sum(self, axis=-1, dim=None, **kwargs):
    dim = axis if dim is None else dim
    if self._is_inner_dim(dim):
        if kwargs:
            raise LazyKeOpsError(f"sum over the last dimension takes no keyword "
                                 f"arguments, got {sorted(kwargs)}")
        return _unary(self, "ComplexSum")
    return complex_reduce(self, "Sum", dim, **kwargs)


def complex_sum_reduction(self, axis=None, dim=None, **kwargs):
    return complex_reduce(self, "Sum", lazy_reduce._dim(self, axis, dim), **kwargs)


def complex_dense(self, limit=lazy_linear.DENSE_LIMIT):
    return _to_complex(_twin(self).dense(limit), self.framework).reshape(self.shape)


def _to_complex(x, framework):
    """A real (..., 2D) result as a complex (..., D) array (autograd kept for torch)."""
    if framework == "torch":
        import torch

        return torch.view_as_complex(x.contiguous().reshape(*x.shape[:-1], -1, 2))
    import numpy

    return numpy.ascontiguousarray(x).view(_COMPLEX_OF[str(x.dtype)])


def _real_out(out):
    """A complex `out=` array as the real array of its pairs (the same memory)."""
    if out is None or _framework_of(out) is None:
        return out
    if get_backend(_framework_of(out)).dtype_name(out) not in COMPLEX_DTYPES:
        raise LazyKeOpsError(f"out= of a complex reduction must be a complex array, got "
                             f"{get_backend(_framework_of(out)).dtype_name(out)}")
    return _pairs_of_array(out, _framework_of(out))


def complex_reduce(t, reduction_op, dim, weight=None, **options):
    """A reduction of a ComplexLazyTensor (or with a complex weight), as a complex array;
    with call=False, a reduction to call later, that gives one too."""
    if options.get("out") is not None:
        options["out"] = _real_out(options["out"])
    result = lazy_reduce.reduce(_twin(t), reduction_op, dim,
                                weight=None if weight is None else _twin(weight), **options)
    if isinstance(result, lazy_reduce.DeferredReduction):
        return _DeferredComplex(result, t.framework or weight.framework)
    return _to_complex(result, t.framework or weight.framework)


class _DeferredComplex:
    """A complex reduction built with call=False: calling it runs it (pykeops's keywords,
    out= a complex array) and gives the complex result."""

    def __init__(self, deferred, framework):
        self.deferred, self.framework = deferred, framework

    def __call__(self, *args, **options):
        if options.get("out") is not None:
            options["out"] = _real_out(options["out"])
        return _to_complex(self.deferred(*args, **options), self.framework)


def complex_matmul(k, v, **options):
    """K @ v for K of dimension 1 (real or complex) and v an array (complex or real)."""
    framework = _framework_of(v)
    if k.ndim != 1 or framework is None or not v.shape:
        raise LazyKeOpsError(f"K @ v needs a LazyTensor K whose last dim is 1 and an array v "
                             f"of shape (M,) or (..., M, E), got K of shape {k.shape} and "
                             f"v of type {type(v).__name__}")
    vector = len(v.shape) == 1
    vj = LazyTensor(v.reshape(1, v.shape[0], 1) if vector else
                    v.reshape(*v.shape[:-2], 1, *v.shape[-2:]))
    if k.nj is not None and vj.nj != k.nj:
        raise LazyKeOpsError(f"K @ v: K of shape {k.shape} has M = {k.nj}, but v has shape "
                             f"{tuple(v.shape)}")
    product = k * vj
    result = product.sum(dim=len(product.batch) + 1, **options)
    return result.reshape(-1) if vector else result


# ------------------------------------------------------------------ real LazyTensors
def real2complex(self): return _unary(self, "Real2Complex")
def imag2complex(self): return _unary(self, "Imag2Complex")
def exp1j(self): return _unary(self, "ComplexExp1j")


def _is_complex_operand(o):
    if isinstance(o, LazyTensor):
        return o.is_complex
    if isinstance(o, (list, tuple)):
        return any(map(_is_complex_number, o))
    framework = _framework_of(o)
    if framework is not None:
        return get_backend(framework).dtype_name(o) in COMPLEX_DTYPES
    return _is_complex_number(o)


_REFLECTED = {"__add__": "__radd__", "__radd__": "__add__", "__sub__": "__rsub__",
              "__rsub__": "__sub__", "__mul__": "__rmul__", "__rmul__": "__mul__",
              "__truediv__": "__rtruediv__", "__rtruediv__": "__truediv__"}


def _defer_complex(name, real_method):
    """x op other for a real x: the complex operation when other is complex."""
    reflected = _REFLECTED[name]

    def method(self, other):
        if other.__class__ in _REAL_OPERANDS or not _is_complex_operand(other):
            return real_method(self, other)
        return getattr(_operand(other), reflected)(self)

    method.__name__ = name
    return method


def _matmul(real_matmul):
    def matmul(self, v, **options):
        if _is_complex_operand(v):
            return complex_matmul(self, v, **options)
        return real_matmul(self, v, **options)

    return matmul


def _sumsoftmaxweight(real_method):
    def sumsoftmaxweight(self, weight, axis=None, dim=None, **kwargs):
        if _is_complex_operand(weight):
            return complex_reduce(self, "SumSoftMaxWeight", lazy_reduce._dim(self, axis, dim),
                                  weight=_operand(weight), **kwargs)
        return real_method(self, weight, axis=axis, dim=dim, **kwargs)

    return sumsoftmaxweight


LazyTensor.is_complex = False
LazyTensor.real2complex = real2complex
LazyTensor.imag2complex = imag2complex
LazyTensor.exp1j = exp1j
for _name in _REFLECTED:
    setattr(LazyTensor, _name, _defer_complex(_name, getattr(LazyTensor, _name)))
LazyTensor.__matmul__ = _matmul(LazyTensor.__matmul__)
LazyTensor.matvec = _matmul(LazyTensor.matvec)
LazyTensor.sumsoftmaxweight = _sumsoftmaxweight(LazyTensor.sumsoftmaxweight)
LazyTensor.sumsoftmaxweight_reduction = LazyTensor.sumsoftmaxweight
ComplexLazyTensor.sum = complex_sum
ComplexLazyTensor.sum_reduction = complex_sum_reduction
ComplexLazyTensor.dense = complex_dense
ComplexLazyTensor.__matmul__ = complex_matmul
ComplexLazyTensor.matvec = lambda self, v: complex_matmul(self, v)
ComplexLazyTensor.rmatvec = lambda self, v: complex_matmul(self.t(), v)
