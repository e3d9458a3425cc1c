"""LazyTensor: the symbolic (..., N, M, D) array of pykeops, framework-agnostic.

A LazyTensor is either a leaf (an i-variable of shape (..., N, 1, D), a j-variable
(..., 1, M, D), a parameter (..., 1, 1, D) or a Python value, an integer constant, or a
symbolic variable made by Vi/Vj/Pm) or an operation on LazyTensors. Building one does no
work beyond checking shapes: sizes N and M, batch dims, dtypes and devices are merged and
checked at each operation, so that errors name both shapes before anything compiles. A
reduction (lazykeops.tensor.lazy_reduce) lowers the tree to a formula node with variable
positions in order of first appearance, and hands it to the Genred core.

This module owns construction and the elementwise and vector operations; the merging of
shapes and the walks over an expression (an explicit stack: expressions built in loops are
deeper than Python's recursion limit) are in `lazy_shapes.py`; the reductions live in
`lazy_reduce.py`, the linear-operator interface (`@`, `.T`, `solve`) and `dense` in
`lazy_linear.py`, pykeops's other attributes and builders in `lazy_pykeops.py`, complex
LazyTensors in `lazy_complex.py`: each attaches its methods to the class.
"""

import math
import numbers

from ..errors import LazyKeOpsError
from ..formula.node import CAT_I, CAT_J, CAT_P, OPS, TEXT_LIMIT, checked_param, render
from ..runtime.backends import get_backend
from .lazy_shapes import _shapes, merge_into


TORCH_TENSOR = []  # [torch.Tensor], set by lazykeops.torch (this module imports no torch)
_PYTHON_VALUES = (float, int, bool, complex, list, tuple, type(None))


def _framework_of(x):
    # The first two tests are also what torch.compile can trace: it cannot read the
    # module name of a Parameter's or a float's class.
    if TORCH_TENSOR and isinstance(x, TORCH_TENSOR[0]):
        return "torch"
    if type(x) in _PYTHON_VALUES:
        return None
    module = type(x).__module__
    if module.startswith("torch"):
        return "torch"
    if module.startswith("numpy") and not isinstance(x, numbers.Number):
        return "numpy"  # numpy scalars (np.float64(2.0), ...) are numbers, not arrays
    return None


# ---- complex data (tensor/lazy_complex.py) ---------------------------------------------
# LazyTensor(complex array, number or list) is a ComplexLazyTensor, as in pykeops: the
# constructor hands such data to `complex_init(t, x, axis)`, which lazy_complex.py sets (it
# changes t's class). The checks stay off the real path: a dtype name, a number's type.
COMPLEX_DTYPES = frozenset(("complex32", "complex64", "complex128"))


def complex_init(t, x, axis):
    raise LazyKeOpsError("complex data needs lazykeops.torch or lazykeops.numpy")


def _is_complex_number(v):
    return isinstance(v, numbers.Complex) and not isinstance(v, numbers.Real)


def _check_complex_data(x):
    backend = get_backend(_framework_of(x)) if _framework_of(x) else None
    if not (_is_complex_number(x) or backend and backend.dtype_name(x) in COMPLEX_DTYPES
            or isinstance(x, (list, tuple)) and any(map(_is_complex_number, x))):
        raise LazyKeOpsError(f"LazyTensor(x, is_complex=True) needs complex data, got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")


# ---- end of complex data -----------------------------------------------------------------


class LazyTensor:
    """pykeops's LazyTensor: `LazyTensor(x[:, None, :])` is i-indexed,
    `LazyTensor(y[None, :, :])` j-indexed, `LazyTensor(p)` with p of shape (D,) a parameter;
    Python floats and lists are parameters, Python ints integer constants. A 2-D array
    needs `axis=0` (i-indexed) or `axis=1` (j-indexed)."""

    # Class-level defaults: a new node sets only what differs (cheap small calls).
    op, args, params, inner_dim = None, (), (), 1  # inner_dim: D, pykeops's ndim
    category = data = symbolic_pos = None
    ni = nj = None
    batch = ()
    framework = dtype = device = None
    __array_priority__ = 100  # numpy defers `array op LazyTensor` to us
    framework_name = None     # the torch and numpy subclasses accept only their arrays

    def __init__(self, x=None, axis=None, is_complex=False):
        if is_complex:  # pykeops's flag: complex data makes a ComplexLazyTensor anyway
            _check_complex_data(x)
        framework = _framework_of(x)
        if framework is not None:
            self._init_array(x, axis, framework)
            return
        if type(x) is float:  # the common case, before the slower ABC checks below
            self.category, self.data = CAT_P, [x]
            return
        if isinstance(x, LazyTensor):
            raise LazyKeOpsError("LazyTensor(x) got a LazyTensor; use it directly")
        if isinstance(x, tuple):  # pykeops: (index, dim, category), a symbolic variable
            self._init_symbolic(x)
            return
        if isinstance(x, bool) or not isinstance(x, (numbers.Number, list)):
            raise LazyKeOpsError(f"LazyTensor expects a torch tensor, a numpy array, a number, "
                                 f"a list of numbers or an (index, dim, category) tuple, got "
                                 f"{type(x).__name__}")
        if _is_complex_number(x) or isinstance(x, list) and \
                any(map(_is_complex_number, x)):  # complex data: see complex_init
            return complex_init(self, x, axis)
        if isinstance(x, numbers.Integral):
            self.op, self.params, self.inner_dim = "IntCst", (int(x),), 1
        elif isinstance(x, (numbers.Real, list)):
            values = [float(v) for v in (x if isinstance(x, list) else [x])]
            if not values:
                raise LazyKeOpsError("LazyTensor of an empty list")
            self.category, self.data, self.inner_dim = CAT_P, values, len(values)

    def _init_array(self, x, axis, framework):
        backend = get_backend(framework)
        if self.framework_name not in (None, backend.name):
            raise LazyKeOpsError(f"lazykeops.{self.framework_name}.LazyTensor got a "
                                 f"{backend.name} array; use lazykeops.{backend.name}")
        if backend.dtype_name(x) in COMPLEX_DTYPES:  # complex data: see complex_init
            return complex_init(self, x, axis)
        self.framework, self.dtype, self.device = backend.name, backend.dtype_name(x), \
            backend.device(x)
        # data keeps the canonical layout (..., N, 1, D), (..., 1, M, D) or (..., 1, 1, D):
        # in memory the same as Genred's (..., N, D), so reductions pass it as it is.
        shape = tuple(x.shape)
        if axis is not None and len(shape) != 2:
            raise LazyKeOpsError(f"axis={axis} is for 2-D arrays (N, D); got an array of shape "
                                 f"{shape}: use (N, 1, D) / (1, M, D) arrays without axis")
        if len(shape) <= 1:
            self.category, self.inner_dim = CAT_P, (shape[0] if shape else 1)
            self.data = x.reshape(1, 1, self.inner_dim)
            return
        if len(shape) == 2:
            if axis not in (0, 1):
                raise LazyKeOpsError(f"a 2-D array of shape {shape} becomes a LazyTensor with "
                                     "axis=0 (i-indexed) or axis=1 (j-indexed)")
            self.inner_dim = shape[1]
            if axis == 0:
                self.category, self.ni, self.data = CAT_I, shape[0], x.reshape(shape[0], 1, -1)
            else:
                self.category, self.nj, self.data = CAT_J, shape[0], x.reshape(1, shape[0], -1)
            return
        *batch, n, m, d = shape
        self.inner_dim, self.batch, self.data = d, tuple(batch), x
        if n == 1 and m == 1:
            self.category = CAT_P
        elif m == 1:
            self.category, self.ni = CAT_I, n
        elif n == 1:
            self.category, self.nj = CAT_J, m
        else:
            raise LazyKeOpsError(f"an array of shape {shape} is neither i-indexed "
                                 "(..., N, 1, D), j-indexed (..., 1, M, D) nor a parameter "
                                 "(..., 1, 1, D)")

    # ------------------------------------------------------------------ construction
    @classmethod
    def symbolic(cls, pos, dim, cat):
        """A variable without data, bound by position when the reduction is called."""
        t = cls.__new__(cls)
        t._init_symbolic((pos, dim, cat))
        return t

    def _init_symbolic(self, triple):
        ok = len(triple) == 3 and all(isinstance(v, numbers.Integral) and
                                      not isinstance(v, bool) for v in triple)
        if not ok or triple[0] < 0 or triple[1] < 1 or triple[2] not in (CAT_I, CAT_J, CAT_P):
            raise LazyKeOpsError(f"a symbolic variable is (index >= 0, dim >= 1, category 0 "
                                 f"(i), 1 (j) or 2 (parameter)), got {triple!r}")
        self.symbolic_pos, self.inner_dim, self.category = (int(v) for v in triple)

    @staticmethod
    def _wrap(x):
        return x if isinstance(x, LazyTensor) else LazyTensor(x)


    def _apply(self, op, *others, params=()):
        """The LazyTensor op(self, *others; params), shapes merged and checked."""
        if params:  # user values: integers only, as make() checks them for formulas
            params = tuple([checked_param(op, p) for p in params])
        if not others:  # unary: nothing to merge, the shape is self's (a fast path)
            out = type(self).__new__(type(self))
            out.op, out.args, out.params = op, (self,), params
            out.ni, out.nj, out.batch = self.ni, self.nj, self.batch
            if self.framework is not None:
                out.framework, out.dtype, out.device = self.framework, self.dtype, self.device
            if self._ranges is not None:
                out._ranges = self._ranges
            try:
                out.inner_dim = OPS[op].dim([self.inner_dim], params)
            except LazyKeOpsError as err:
                raise LazyKeOpsError(f"{op} of a LazyTensor of shape {self.shape}: {err}") \
                    from None
            return out
        args = (self, *[o if isinstance(o, LazyTensor) else LazyTensor(o) for o in others])
        # The framework-pinned subclass wins over the base class of wrapped numbers.
        cls = type(self)
        if cls is LazyTensor:
            cls = next((type(a) for a in args if type(a) is not LazyTensor), LazyTensor)
        out = cls.__new__(cls)
        out.op, out.args, out.params = op, args, params
        try:
            out.inner_dim = OPS[op].dim([a.inner_dim for a in args], params)
        except LazyKeOpsError as err:
            raise LazyKeOpsError(f"{op} of LazyTensors of shapes {_shapes(args)}: {err}") \
                from None
        merge_into(out, args)
        return out

    # ------------------------------------------------------------------ pykeops attributes
    @property
    def nbatchdims(self):
        return len(self.batch)

    @property
    def ndim(self):
        """As in pykeops: the inner dimension D."""
        return self.inner_dim

    def dim(self):
        """As in pykeops and torch: the number of dimensions of `_shape`, (*batch, N, M, D)."""
        return len(self.batch) + 3

    @property
    def shape(self):
        """(*batch, N, M, D), without D when D = 1 (pykeops's convention)."""
        inner = (self.ni or 1, self.nj or 1)
        return (*self.batch, *inner) + ((self.inner_dim,) if self.inner_dim > 1 else ())

    def __str__(self):
        from .lazy_reduce import lower

        node, _ = lower([self])
        return f"lazykeops LazyTensor\n    formula: {render(node[0], TEXT_LIMIT)}\n    " \
               f"shape: {self.shape}"

    __repr__ = __str__
    __hash__ = object.__hash__  # == builds a formula, so hash by identity

    _ranges = None

    @property
    def ranges(self):
        """pykeops's block-sparse ranges (runtime/ranges.py), or None: set on a LazyTensor,
        they go with the expressions built from it (`K.ranges = r; K @ b` reduces over r),
        and a reduction's `ranges=` keyword overrides them."""
        return self._ranges

    @ranges.setter
    def ranges(self, value):
        if value is not None and (not isinstance(value, (tuple, list)) or len(value) != 6):
            raise LazyKeOpsError(f"ranges of a LazyTensor of shape {self.shape} must be "
                                 f"pykeops's 6-tuple (ranges_i, slices_i, redranges_j, "
                                 f"ranges_j, slices_j, redranges_i) or None, got "
                                 f"{type(value).__name__}")
        self._ranges = None if value is None else tuple(value)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other): return self._apply("Add", other)
    def __radd__(self, other): return LazyTensor._wrap(other)._apply("Add", self)
    def __sub__(self, other): return self._apply("Subtract", other)
    def __rsub__(self, other): return LazyTensor._wrap(other)._apply("Subtract", self)
    def __mul__(self, other): return self._apply("Mult", other)
    def __rmul__(self, other): return LazyTensor._wrap(other)._apply("Mult", self)
    def __truediv__(self, other): return self._apply("Divide", other)
    def __rtruediv__(self, other): return LazyTensor._wrap(other)._apply("Divide", self)
    def __neg__(self): return self._apply("Minus")
    def __abs__(self): return self._apply("Abs")
    def __or__(self, other): return self._apply("Scalprod", other)
    def __ror__(self, other): return LazyTensor._wrap(other)._apply("Scalprod", self)
    def __eq__(self, other): return self._apply("Equal", other)
    def __ne__(self, other): return self._apply("NotEqual", other)
    def __lt__(self, other): return self._apply("LessThan", other)
    def __le__(self, other): return self._apply("LessOrEqual", other)
    def __gt__(self, other): return LazyTensor._wrap(other)._apply("LessThan", self)
    def __ge__(self, other): return LazyTensor._wrap(other)._apply("LessOrEqual", self)

    def __pow__(self, other):
        if type(other) is int or isinstance(other, numbers.Integral) and \
                not isinstance(other, bool):
            return self._apply("Square") if other == 2 else self._apply("Pow", params=(other,))
        if isinstance(other, numbers.Real) and other == 0.5:
            return self._apply("Sqrt")
        if isinstance(other, numbers.Real) and other == -0.5:
            return self._apply("Rsqrt")
        return self._apply("Powf", other)

    def __rpow__(self, other):
        return LazyTensor._wrap(other)._apply("Powf", self)

    power = __pow__

    # ------------------------------------------------------------------ math
    def exp(self): return self._apply("Exp")
    def log(self): return self._apply("Log")
    def xlogx(self): return self._apply("XLogX")
    def sin(self): return self._apply("Sin")
    def cos(self): return self._apply("Cos")
    def sinxdivx(self): return self._apply("SinXDivX")
    def sinc(self): return (math.pi * self)._apply("SinXDivX")
    def asin(self): return self._apply("Asin")
    def acos(self): return self._apply("Acos")
    def atan(self): return self._apply("Atan")
    def atan2(self, other): return self._apply("Atan2", other)
    def sqrt(self): return self._apply("Sqrt")
    def rsqrt(self): return self._apply("Rsqrt")
    def abs(self): return self._apply("Abs")
    def sign(self): return self._apply("Sign")
    def step(self): return self._apply("Step")
    def relu(self): return self._apply("ReLU")
    def square(self): return self._apply("Square")
    def inv(self): return self._apply("Inv")
    def floor(self): return self._apply("Floor")
    def round(self, other=0):
        """Round to `other` decimals (pykeops's name for the argument)."""
        if not isinstance(other, numbers.Integral) or isinstance(other, bool):
            raise LazyKeOpsError(f"round(other) takes an integer number of decimals, got "
                                 f"{other!r}")
        return self._apply("Round", params=(other,))
    def ifelse(self, other1, other2): return self._apply("IfElse", other1, other2)
    def mod(self, modulus, offset=0): return self._apply("Mod", modulus, offset)

    def clamp(self, other1, other2):
        bounds = (other1, other2)
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in bounds):
            return self._apply("ClampInt", params=bounds)
        return self._apply("Clamp", *bounds)

    # ------------------------------------------------------------------ vectors
    def sqnorm2(self): return self._apply("SqNorm2")
    def norm2(self): return self._apply("Norm2")
    def normalize(self): return self._apply("Normalize")
    def sqdist(self, other): return self._apply("SqDist", other)
    def weightedsqnorm(self, other): return LazyTensor._wrap(other)._apply("WeightedSqNorm", self)

    def norm(self, dim=-1):
        self._check_inner_dim(dim, "norm")
        return self.norm2()

    def weightedsqdist(self, g, s):
        return LazyTensor._wrap(s)._apply("WeightedSqDist", self, g)

    def elem(self, i): return self._apply("Elem", params=(i,))
    def extract(self, i, d): return self._apply("Extract", params=(i, d))  # start, length
    def one_hot(self, D): return self._apply("OneHot", params=(D,))
    def concat(self, other): return self._apply("Concat", other)
    def matvecmult(self, other): return self._apply("MatVecMult", other)
    def vecmatmult(self, other): return self._apply("VecMatMult", other)
    def tensorprod(self, other): return self._apply("TensorProd", other)

    def keops_tensordot(self, other, dimfa, dimfb, contfa, contfb):
        params = tuple(tuple(int(v) for v in p) for p in (dimfa, dimfb, contfa, contfb))
        return self._apply("TensorDot", other, params=params)

    def keops_kron(self, other, dimfself, dimfother):
        return self._apply("Kron", other, params=(tuple(dimfself), tuple(dimfother)))

    def bspline(self, x, k=0):
        """B-spline basis functions of order k (degree k) on the knots `self`, evaluated at
        x, as pykeops's bspline(x, k=0)."""
        return self._apply("BSpline", x, params=(k,))

    @staticmethod
    def cat(tuple_of_lt, dim=-1):
        tensors = list(tuple_of_lt)
        if not tensors or not all(isinstance(t, LazyTensor) for t in tensors):
            raise LazyKeOpsError(f"LazyTensor.cat takes a list of LazyTensors, got "
                                 f"{[type(t).__name__ for t in tensors]}")
        tensors[0]._check_inner_dim(dim, "cat")
        result = LazyTensor._wrap(tensors[0])
        for t in tensors[1:]:
            result = result.concat(t)
        return result

    @staticmethod
    def concatenate(tuple_of_lt, axis=-1):
        return LazyTensor.cat(tuple_of_lt, axis)

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == self.nbatchdims + 3 and \
                all(k == slice(None) for k in key[:-1]):
            key = key[-1]
        if isinstance(key, numbers.Integral):
            k = key + self.inner_dim if key < 0 else key
            return self.elem(k)
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.inner_dim)
            if stop <= start:
                raise LazyKeOpsError(f"empty slice {key} of a LazyTensor of shape {self.shape}")
            return self.extract(start, stop - start)
        raise LazyKeOpsError(f"LazyTensor indexing takes an integer or a slice k:l of the last "
                             f"dimension, got {key!r}")

    def _is_inner_dim(self, dim):
        """True when `dim` names the inner (vector) dimension of this LazyTensor."""
        return isinstance(dim, numbers.Integral) and dim in (-1, self.nbatchdims + 2)

    def _check_inner_dim(self, dim, what):
        if not self._is_inner_dim(dim):
            raise LazyKeOpsError(f"{what} works on the last dimension (dim=-1) of a "
                                 f"LazyTensor of shape {self.shape}, got dim={dim}")
