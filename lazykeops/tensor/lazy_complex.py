"""ComplexLazyTensor: LazyTensors of complex data, pykeops 2.3's ComplexLazyTensor.

A complex LazyTensor of complex dimension D is held as a real one of dimension 2D, the
interleaved (re, im) pairs of formula/complex.py: leaves wrap the real view of the data
(torch.view_as_real, numpy's .view of the float type), operations are the complex formula
ops. Each ComplexLazyTensor mirrors the attributes of that real LazyTensor (its `_real`
twin), so that sizes, batch dims and formulas read the same, while `shape`, `ndim` and
`dtype` speak of the complex values: (..., N, M, D), D, "complex64"/"complex128"
(`_shape` and `_dtype` are the pairs', as in pykeops). Operations build on the twins, so
the merging and lowering code of lazy.py never meets a complex dtype.

This module owns construction (the hook of lazy.py's constructor, the per-framework
classes) and the elementwise operations; reductions, K @ v, dense() and the complex side
of real LazyTensors are in lazy_complex_reduce.py, attached to the classes there.

Arithmetic follows pykeops's dispatch: complex * real of dimension 1 is ComplexRealScal,
complex with real of larger dimension goes through Real2Complex, complex scalars (D = 1)
broadcast. Deliberate differences from pykeops, whose ComplexLazyTensor inherits every
real method and applies it to the pairs: Python numbers work on both sides of + - * /
(pykeops raises AttributeError); z ** n for integers n, z.square(), z[k], z.extract,
z.sqnorm2(), z.norm2(), z.sqdist(w), z.normalize() and z.concat(w) have their complex
meaning; ops without one (sin, log, comparisons, |, min, max, logsumexp, K-min
selections, ...) raise LazyKeOpsError rather than computing on the pairs; `ndim` is D
(pykeops: 2D, its internal dimension).
"""

import numbers

from ..errors import LazyKeOpsError
from . import lazy, lazy_linear, lazy_reduce
from ..runtime.backends import get_backend
from ..formula.node import TEXT_LIMIT, render
from .lazy import COMPLEX_DTYPES, LazyTensor, _framework_of

# The ops a ComplexLazyTensor may go through (formula/complex.py and the real ops that
# mean the same on pairs), by whether their result is complex or real.
COMPLEX_RESULT = {"ComplexAdd", "ComplexSubtract", "ComplexMult", "ComplexDivide", "Conj",
                  "ComplexExp", "ComplexRealScal", "ComplexSum", "ComplexSumT", "Minus",
                  "Concat", "Normalize"}
REAL_RESULT = {"ComplexReal", "ComplexImag", "ComplexAbs", "ComplexAngle",
               "ComplexSquareAbs", "SqNorm2", "Norm2"}

_REAL_OF = {"complex32": "float16", "complex64": "float32", "complex128": "float64"}
_COMPLEX_OF = {v: k for k, v in _REAL_OF.items()}


class ComplexLazyTensor(LazyTensor):
    """A LazyTensor of complex values: `ComplexLazyTensor(z[:, None, :])` for a complex
    array z (as LazyTensor(z) does), or of a real array / Python numbers, seen as complex."""

    _real_class = LazyTensor  # the framework-pinned real class (make_lazy_api)
    _real = None              # the real LazyTensor of the (re, im) pairs
    is_complex = True

    def __init__(self, x=None, axis=None, is_complex=True):
        if not is_complex:
            raise LazyKeOpsError("ComplexLazyTensor(x, is_complex=False): use LazyTensor")
        complex_init(self, x, axis)

    # ------------------------------------------------------------------ attributes
    @property
    def dtype(self):
        return _COMPLEX_OF.get(self.__dict__.get("dtype"))

    @dtype.setter
    def dtype(self, value):
        self.__dict__["dtype"] = _REAL_OF.get(value, value)

    @property
    def ndim(self):
        return self.inner_dim // 2

    @property
    def shape(self):
        d = self.inner_dim // 2
        return (*self.batch, self.ni or 1, self.nj or 1) + ((d,) if d > 1 else ())

    @property
    def _dtype(self):  # pykeops's name of the real type of the pairs
        return self.__dict__.get("dtype")

    def __str__(self):
        (node,), _ = lazy_reduce.lower([self._real])
        return f"lazykeops ComplexLazyTensor\n    formula: {render(node, TEXT_LIMIT)}\n" \
               f"    shape: {self.shape}"

    __repr__ = __str__
    __hash__ = object.__hash__

    @property
    def real(self):
        return _twin(self)._apply("ComplexReal")

    @property
    def imag(self):
        return _twin(self)._apply("ComplexImag")

    def _apply(self, op, *others, params=()):
        # Every real method of LazyTensor builds through _apply: on the pairs they would
        # compute something else than their complex meaning, so only the complex ops pass
        # (pykeops's unary("Conj"), binary(w, "ComplexMult"), ...).
        if op not in COMPLEX_RESULT and op not in REAL_RESULT:
            raise LazyKeOpsError(f"{op} is not defined for a ComplexLazyTensor (shape "
                                 f"{self.shape}); use .real, .imag, abs() or angle() first")
        out = self._real._apply(op, *[_twin(_operand(o)) for o in others], params=params)
        return _as_complex(out) if op in COMPLEX_RESULT else out

    # ------------------------------------------------------------------ math
    def conj(self): return _unary(self, "Conj")
    def exp(self): return _unary(self, "ComplexExp")
    def angle(self): return _twin(self)._apply("ComplexAngle")
    def abs(self): return _twin(self)._apply("ComplexAbs")
    __abs__ = abs
    def __neg__(self): return _unary(self, "Minus")
    def square(self): return _binary(self, "ComplexMult", self)
    def sqnorm2(self): return _twin(self)._apply("SqNorm2")   # sum of |z_k|^2, real
    def norm2(self): return _twin(self)._apply("Norm2")
    def normalize(self): return _unary(self, "Normalize")
    def sqdist(self, other): return (self - other).sqnorm2()

    def __pow__(self, other):
        n = other
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n == 0:
            raise LazyKeOpsError(f"a ComplexLazyTensor (shape {self.shape}) has powers with "
                                 f"nonzero integer exponents only, got {n!r}")
        result, base, k = None, self, abs(int(n))
        while k:  # by squaring: log2(n) ComplexMult nodes
            if k & 1:
                result = base if result is None else result * base
            k >>= 1
            if k:
                base = base.square()
        return 1 / result if n < 0 else result

    power = __pow__

    def __add__(self, other): return _binary(self, "ComplexAdd", _complexified(other))
    def __radd__(self, other): return _binary(_complexified(other), "ComplexAdd", self)
    def __sub__(self, other): return _binary(self, "ComplexSubtract", _complexified(other))
    def __rsub__(self, other): return _binary(_complexified(other), "ComplexSubtract", self)
    def __truediv__(self, other):
        other = _operand(other)
        if not other.is_complex and other.inner_dim == 1:  # pairs over a real scalar: exact
            return _as_complex(_twin(self)._apply("Divide", other))
        return _binary(self, "ComplexDivide", _complexified(other))
    def __rtruediv__(self, other): return _binary(_complexified(other), "ComplexDivide", self)

    def __mul__(self, other):
        other = _operand(other)
        if not other.is_complex and other.inner_dim == 1:
            return _as_complex(other._apply("ComplexRealScal", _twin(self)))
        return _binary(self, "ComplexMult", _complexified(other))

    __rmul__ = __mul__  # complex products commute

    # ------------------------------------------------------------------ components
    def elem(self, i):
        return self.extract(i, 1)

    def extract(self, i, d):  # pykeops's names: start i, length d
        if not all(isinstance(v, numbers.Integral) for v in (i, d)):
            raise LazyKeOpsError(f"extract(i, d) takes integers (start, length), got {i!r}, "
                                 f"{d!r}")
        return _as_complex(_twin(self)._apply("Extract", params=(2 * i, 2 * d)))

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == self.nbatchdims + 3 and \
                all(k == slice(None) for k in key[:-1]):
            key = key[-1]
        d = self.inner_dim // 2
        if isinstance(key, numbers.Integral) and -d <= key < d:
            return self.elem(key % d)
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(d)
            if stop > start:
                return self.extract(start, stop - start)
        raise LazyKeOpsError(f"ComplexLazyTensor indexing takes an integer or a non-empty "
                             f"slice k:l of the last dimension (D = {d}), got {key!r}")

    def concat(self, other):
        return _binary(self, "Concat", _complexified(other))

    # ------------------------------------------------------------------ structure
    def t(self): return _as_complex(lazy_linear.transpose(_twin(self)))
    T = property(t)

    # ------------------------------------------------------------------ refused
    def real2complex(self): raise _refused(self, "real2complex", "it is complex already")
    def imag2complex(self): raise _refused(self, "imag2complex", "it is complex already")
    def exp1j(self): raise _refused(self, "exp1j", "use (1j * z).exp()")
    def __or__(self, other): raise _refused(self, "|", "(z * w.conj()).sum() is the "
                                                   "Hermitian product")
    __ror__ = __or__


def _refused(t, what, hint):
    return LazyKeOpsError(f"{what} is not defined for a ComplexLazyTensor (shape {t.shape}): "
                          f"{hint}")


def _refuse_method(name, hint):
    def method(self, *args, **kwargs):
        raise _refused(self, name, hint)

    method.__name__ = name
    return method


_UNORDERED = "complex numbers are not ordered"
for _name in ("min", "max", "argmin", "argmax", "min_reduction", "max_reduction",
              "argmin_reduction", "argmax_reduction", "min_argmin", "max_argmax",
              "min_argmin_reduction", "max_argmax_reduction", "Kmin", "argKmin",
              "Kmin_argKmin", "Kmin_reduction", "argKmin_reduction",
              "Kmin_argKmin_reduction", "__lt__", "__le__", "__gt__", "__ge__"):
    setattr(ComplexLazyTensor, _name, _refuse_method(_name, _UNORDERED))
for _name, _hint in (("logsumexp", "reduce .real or abs() instead"),
                     ("logsumexp_reduction", "reduce .real or abs() instead"),
                     ("sumsoftmaxweight", "the softmax weights must be real: use a real "
                                          "LazyTensor with a complex weight"),
                     ("sumsoftmaxweight_reduction", "use a real LazyTensor with a complex "
                                                    "weight"),
                     ("solve", "not implemented for complex operators"),
                     ("grad", "differentiate .real and .imag, or use torch autograd"),
                     ("diff", "differentiate .real and .imag, or use torch autograd"),
                     ("keops_tensordot", "not implemented for complex LazyTensors"),
                     ("keops_kron", "not implemented for complex LazyTensors")):
    setattr(ComplexLazyTensor, _name, _refuse_method(_name, _hint))


# ------------------------------------------------------------------ construction
_COMPLEX_CLASSES = {LazyTensor: ComplexLazyTensor}
# Operand types that are never complex: the operators' fast path (pinned classes are
# added by pinned_complex_class). A list: torch.compile reads `float in` a set of
# classes as False.
_REAL_OPERANDS = [int, float, LazyTensor]


def complex_class(real_class):
    """The ComplexLazyTensor class that goes with a (framework-pinned) LazyTensor class."""
    return _COMPLEX_CLASSES.get(real_class, ComplexLazyTensor)


def pinned_complex_class(real_class, framework):
    """The ComplexLazyTensor of one framework, a subclass of its LazyTensor class too (so
    that `x_real + z` asks z first, as Python does for subclasses)."""
    cls = type("ComplexLazyTensor", (ComplexLazyTensor, real_class),
               {"_real_class": real_class, "__module__": f"lazykeops.{framework}"})
    _COMPLEX_CLASSES[real_class] = _COMPLEX_CLASSES[cls] = cls
    _REAL_OPERANDS.append(real_class)
    return cls


def complex_init(t, x, axis):
    """Make t (a LazyTensor being constructed) the ComplexLazyTensor of the data x."""
    cls = type(t) if isinstance(t, ComplexLazyTensor) else complex_class(type(t))
    real_class = cls._real_class
    framework = _framework_of(x)
    if framework is not None:
        backend = get_backend(framework)
        if backend.dtype_name(x) in COMPLEX_DTYPES:
            real = real_class(_pairs_of_array(x, framework), axis=axis)
        else:  # a real array, seen as complex
            real = real_class(x, axis=axis)._apply("Real2Complex")
    elif isinstance(x, numbers.Number) or isinstance(x, (list, tuple)):
        values = x if isinstance(x, (list, tuple)) else [x]
        if not values or not all(isinstance(v, numbers.Number) and not isinstance(v, bool)
                                 for v in values):
            raise LazyKeOpsError(f"ComplexLazyTensor of a list takes a non-empty list of "
                                 f"numbers, got {x!r}")
        real = real_class([float(p) for v in values for p in (complex(v).real,
                                                               complex(v).imag)])
    else:
        raise LazyKeOpsError(f"ComplexLazyTensor expects a torch tensor, a numpy array, a "
                             f"number or a list of numbers, got {type(x).__name__}")
    t.__class__ = cls
    _adopt(t, real)


def _pairs_of_array(x, framework):
    """The real (..., 2D) view of a complex (..., D) array ((2,) for a 0-d one)."""
    if framework == "torch":
        import torch

        pairs = torch.view_as_real(x.resolve_conj())
        return pairs.reshape(*x.shape[:-1], 2 * x.shape[-1]) if x.dim() else pairs
    import numpy

    real = numpy.dtype(_REAL_OF[str(x.dtype)])
    return numpy.ascontiguousarray(x).reshape(x.shape or (1,)).view(real)


def _adopt(t, real):
    """t mirrors the real LazyTensor `real` (its pairs) and keeps it as its twin."""
    t.__dict__.update(real.__dict__)
    t._real = real


def _as_complex(real):
    out = complex_class(type(real)).__new__(complex_class(type(real)))
    _adopt(out, real)
    return out


def _twin(t):
    return t._real if isinstance(t, ComplexLazyTensor) else t


def _operand(o):
    """o as a LazyTensor (complex data gives a ComplexLazyTensor through LazyTensor())."""
    return o if isinstance(o, LazyTensor) else LazyTensor(o)


def _complexified(o):
    o = _operand(o)
    return o if o.is_complex else _as_complex(o._apply("Real2Complex"))


def _unary(t, op):
    return _as_complex(_twin(t)._apply(op))


def _binary(a, op, b):
    return _as_complex(_twin(a)._apply(op, _twin(b)))


lazy.complex_init = complex_init
