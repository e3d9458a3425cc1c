"""pykeops's LazyTensor surface beyond the maths: its attributes (`_shape`, `formula`,
`variables`, ...), its generic builders (`unary`, `binary`, `ternary`, `reduction`,
`addop`, ...), the symbolic operators (`grad_matrix`, `divergence`, `laplacian`,
`trace_operator`, `difference_matrix`, `factorize`), attached to LazyTensor at the bottom.

pykeops builds its formulas as strings; the methods that only serve that construction
(`init`, `join`, `promote`, `fixvariables`, `get_tools`) have no counterpart here and
raise an error that says so, rather than an AttributeError that reads like a bug.
"""

from ..errors import LazyKeOpsError
from ..formula import autodiff
from ..formula.node import CAT_I, CAT_J, CAT_P, OPS, TEXT_LIMIT, make, render
from .lazy import LazyTensor
from .lazy_shapes import merge_into, postorder
from .lazy_reduce import DERIVATIVES, lower, reduce
from ..runtime.options import INIT_DEFAULTS, as_index

# pykeops's operator spellings in binary(..., is_operator=True).
OPERATORS = {"+": "Add", "-": "Subtract", "*": "Mult", "/": "Divide", "|": "Scalprod"}
# pykeops's reduction names -> (lazykeops's reduction, takes opt_arg as K, takes `other`).
REDUCTIONS = {"Sum": ("Sum", False), "LogSumExp": ("LogSumExp", False),
              "SumSoftMaxWeight": ("SumSoftMaxWeight", False), "Min": ("Min", False),
              "Max": ("Max", False), "ArgMin": ("ArgMin", False), "ArgMax": ("ArgMax", False),
              "Min_ArgMin": ("Min_ArgMin", False), "Max_ArgMax": ("Max_ArgMax", False),
              "KMin": ("KMin", True), "ArgKMin": ("ArgKMin", True),
              "KMin_ArgKMin": ("KMin_ArgKMin", True)}
AXES = {CAT_I: 0, CAT_J: 1, CAT_P: 2}


# ------------------------------------------------------------------ attributes
def _shape(self):
    """(*batch, N, M, D), D included even when it is 1 (pykeops's internal shape)."""
    return (*self.batch, self.ni or 1, self.nj or 1, self.inner_dim)


def _formula(self):
    (node,), _ = lower([self])
    return render(node, TEXT_LIMIT)


def _variables(self):
    """The arrays of the variables, in the order the formula numbers them."""
    _, leaves = lower([self])
    return tuple(leaf.data for leaf in leaves if leaf.symbolic_pos is None)


def _symbolic_variables(self):
    """(index, dim, axis) of each symbolic variable (Vi/Vj/Pm(index, dim))."""
    found = {t.symbolic_pos: (t.symbolic_pos, t.inner_dim, AXES[t.category])
             for t in postorder([self]) if t.symbolic_pos is not None}
    return tuple(found[k] for k in sorted(found))


def _axis(self):
    """0 for an i-variable, 1 for a j-variable, 2 for a parameter (pykeops's axis of a
    variable); None for the result of an operation."""
    return AXES.get(self.category) if self.op is None else None


def new_variable_index(self):
    """The first symbolic variable index not used in this expression."""
    return max((t.symbolic_pos for t in postorder([self]) if t.symbolic_pos is not None),
               default=-1) + 1


# ------------------------------------------------------------------ generic builders
def unary(self, operation, dimres=None, opt_arg=None, opt_arg2=None, is_complex=None):
    """operation(self[, opt_arg[, opt_arg2]]) by its formula name, e.g. unary("Exp")."""
    params = tuple(a for a in (opt_arg, opt_arg2) if a is not None)
    return _checked(self._apply(_op_name(operation, 1), params=params), dimres, operation)


def binary(self, other, operation, is_operator=False, dimres=None, dimcheck="sameor1",
           opt_arg=None, opt_pos="last", rversion=False, is_complex=None):
    """operation(self, other) by its formula name or, with is_operator, its symbol."""
    name = OPERATORS.get(operation) if is_operator else _op_name(operation, 2)
    if name is None:
        raise LazyKeOpsError(f"binary(..., {operation!r}, is_operator=True): operators are "
                             f"{', '.join(OPERATORS)}")
    a, b = (LazyTensor._wrap(other), self) if rversion else (self, other)
    params = () if opt_arg is None else (opt_arg,)
    return _checked(a._apply(name, b, params=params), dimres, operation)


def ternary(self, other1, other2, operation, dimres=None, dimcheck="sameor1", opt_arg=None):
    """operation(self, other1, other2) by its formula name, e.g. ternary(a, b, "IfElse")."""
    params = () if opt_arg is None else (opt_arg,)
    return _checked(self._apply(_op_name(operation, 3), other1, other2, params=params),
                    dimres, operation)


def _op_name(operation, arity):
    if not isinstance(operation, str) or operation not in OPS or OPS[operation].arity != arity:
        known = sorted(n for n, op in OPS.items() if op.arity == arity)
        raise LazyKeOpsError(f"{operation!r} is not an operation of {arity} argument(s); "
                             f"those are: {', '.join(known)}")
    return operation


def _checked(result, dimres, operation):
    if dimres is not None and as_index(dimres, "dimres", operation) != result.inner_dim:
        raise LazyKeOpsError(f"{operation} gives dim {result.inner_dim}, but dimres={dimres}")
    return result


def _binary_alias(op):
    def method(self, other, **kwargs):
        _no_options(kwargs, op)
        return self._apply(op, other)

    method.__name__ = op.lower() + "op"
    return method


def _no_options(kwargs, what):
    if set(kwargs) - {"is_complex"}:
        raise LazyKeOpsError(f"{what} takes no keyword arguments here, got {sorted(kwargs)}")


def reduction(self, reduction_op, other=None, opt_arg=None, axis=None, dim=None, call=True,
              is_complex=None, **kwargs):
    """pykeops's generic reduction: reduction("Sum", dim=1), reduction("ArgKMin",
    opt_arg=K, dim=0), reduction("LogSumExp", other=weight, dim=1), ..."""
    if reduction_op not in REDUCTIONS:
        raise LazyKeOpsError(f"reduction {reduction_op!r} of a LazyTensor of shape "
                             f"{self.shape}: lazykeops has {', '.join(REDUCTIONS)}")
    name, takes_k = REDUCTIONS[reduction_op]
    dim = axis if dim is None else dim
    if dim is None:
        raise LazyKeOpsError(f"reduction({reduction_op!r}) needs axis or dim")
    if takes_k != (opt_arg is not None):
        raise LazyKeOpsError(f"reduction({reduction_op!r}) "
                             + ("needs opt_arg=K" if takes_k else "takes no opt_arg"))
    if other is not None and name not in ("LogSumExp", "SumSoftMaxWeight"):
        raise LazyKeOpsError(f"reduction({reduction_op!r}) takes no `other` (weights are for "
                             "LogSumExp and SumSoftMaxWeight)")
    if name == "SumSoftMaxWeight" and other is None:
        raise LazyKeOpsError("reduction('SumSoftMaxWeight') needs other=weights")
    return reduce(self, name, dim, weight=other, k=opt_arg, call=call, **kwargs)


def separate_kwargs(self, kwargs):
    """pykeops's split of reduction keywords: (Genred init keywords, call keywords)."""
    init = {k: v for k, v in kwargs.items() if k in INIT_DEFAULTS}
    return init, {k: v for k, v in kwargs.items() if k not in INIT_DEFAULTS}


def lt_constructor(self, x=None, axis=None, is_complex=None):
    """A new LazyTensor of this one's framework (pykeops's constructor hook); complex by
    default when this one is."""
    if is_complex is None:
        is_complex = self.is_complex
    cls = self._real_class if self.is_complex else type(self)
    return cls(x, axis, is_complex=is_complex)


# ------------------------------------------------------------------ symbolic operators
def _symbolic(self, kind, v, dim_rule):
    """The LazyTensor kind(self, v), expanded symbolically when lowered (DERIVATIVES)."""
    if not isinstance(v, LazyTensor) or v.op is not None or v.category is None:
        raise LazyKeOpsError(f"{kind} of a LazyTensor of shape {self.shape} is taken with "
                             "respect to a variable LazyTensor (made from an array or by "
                             f"Vi/Vj/Pm), got {v!r}")
    out = type(self).__new__(type(self))
    out.op, out.args, out.inner_dim = kind, (self, v), dim_rule(self, v)
    merge_into(out, (self, v))
    return out


def _same_dims(what):
    def rule(f, v):
        if f.inner_dim != v.inner_dim:
            raise LazyKeOpsError(f"{what} needs a LazyTensor and a variable of the same last "
                                 f"dim, got shapes {f.shape} and {v.shape}")
        return 1
    return rule


def _scalar_only(f, v):
    if f.inner_dim != 1:
        raise LazyKeOpsError(f"laplacian needs a LazyTensor of last dim 1, got shape {f.shape}")
    return 1


def grad_matrix(self, other):
    """The dim(self) * dim(other) partial derivatives, row k the gradient of self_k."""
    return _symbolic(self, "GradMatrix", other, lambda f, v: f.inner_dim * v.inner_dim)


def divergence(self, var):
    """sum_k d self_k / d var_k."""
    return _symbolic(self, "Divergence", var, _same_dims("divergence"))


def laplacian(self, var):
    """sum_k d^2 self / d var_k^2, for self of last dim 1."""
    return _symbolic(self, "Laplacian", var, _scalar_only)


def trace_operator(self, var):
    """The trace of the linear map var -> self(var) (var leaves the formula)."""
    return _symbolic(self, "TraceOperator", var, _same_dims("trace_operator"))


def _trace_of_linear(f, v):
    """Trace of the linear map v -> f(v): its divergence, which does not depend on v, so
    that v (often a symbolic variable without data) leaves the formula."""
    return autodiff.substitute(autodiff.divergence(f, v), {v: make("Zero", params=(v.dim,))})


def difference_matrix(self, other):
    """The dim(self) * dim(other) values self_k - other_l, row k = self_k - other.
    (pykeops 2.3 declares this method, but its formula has no such operation.)"""
    ones_self, ones_other = [1.0] * self.inner_dim, [1.0] * LazyTensor._wrap(other).inner_dim
    return self.tensorprod(ones_other) - LazyTensor._wrap(ones_self).tensorprod(other)


def factorize(self, other):
    """The same LazyTensor: pykeops rewrites the formula string to share `other`; lazykeops
    shares every repeated subexpression already (its formula nodes are interned)."""
    LazyTensor._wrap(other)
    return self


def _internal(name):
    def method(self, *args, **kwargs):
        raise LazyKeOpsError(f"LazyTensor.{name} builds pykeops's formula strings; lazykeops "
                             "builds formula nodes and has no counterpart (see docs/pykeops.md)")

    method.__name__ = name
    return method


def _call(self, *args, **kwargs):
    raise LazyKeOpsError(f"a LazyTensor of shape {self.shape} is not a reduction: call "
                         "a reduction (.sum(dim=...), ..., or one built with call=False)")


DERIVATIVES["TraceOperator"] = _trace_of_linear  # the others are formula.autodiff's
LazyTensor._shape = property(_shape)
LazyTensor._dtype = property(lambda self: self.dtype)
LazyTensor.batchdims = property(lambda self: self.batch or None)
LazyTensor.formula = property(_formula)
LazyTensor.formula2 = None
LazyTensor.backend = None  # pykeops: set it to make this LazyTensor's reductions use one
LazyTensor.variables = property(_variables)
LazyTensor.symbolic_variables = property(_symbolic_variables)
LazyTensor.axis = property(_axis)
LazyTensor.new_variable_index = new_variable_index
LazyTensor.unary, LazyTensor.binary, LazyTensor.ternary = unary, binary, ternary
LazyTensor.addop, LazyTensor.subop = _binary_alias("Add"), _binary_alias("Subtract")
LazyTensor.mulop, LazyTensor.divop = _binary_alias("Mult"), _binary_alias("Divide")
LazyTensor.reduction = reduction
LazyTensor.separate_kwargs = separate_kwargs
LazyTensor.lt_constructor = lt_constructor
LazyTensor.__min__ = lambda self, **kwargs: self.min(**kwargs)
LazyTensor.__max__ = lambda self, **kwargs: self.max(**kwargs)
LazyTensor.__call__ = _call
LazyTensor.__array_ufunc__ = None  # numpy: `array op LazyTensor` calls our reflected op
LazyTensor.grad_matrix, LazyTensor.divergence = grad_matrix, divergence
LazyTensor.laplacian, LazyTensor.trace_operator = laplacian, trace_operator
LazyTensor.difference_matrix = difference_matrix
LazyTensor.factorize = factorize
LazyTensor.auto_factorize = lambda self: self
for _name in ("init", "join", "promote", "fixvariables", "get_tools"):
    setattr(LazyTensor, _name, _internal(_name))
