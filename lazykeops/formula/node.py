"""Formula graph: interned, immutable nodes and the op registry that defines them.

A `Node` is an operation applied to child nodes and to integer parameters (such as the
exponent of `Pow(f, 2)`). Nodes are interned: building the same expression twice returns
the same object, so structural equality is identity and common subexpressions are shared
for free. Each node's output dimension is computed by its op's dimension rule when the
node is built, so an ill-formed formula never exists.

Each operation is described once by an `OpSpec` in the registry `OPS`, filled by the family
modules (`elementwise`, `vector`, `linalg`, `indexing`) at import time: its arity, its
dimension rule, its C++ emission, its torch reference, its derivative and the facts the
passes (slicing, chunk planning, rendering) rely on. The parser, the code generator, the
reference evaluator and the registry-wide test all read this one table.
"""

import numbers
import weakref
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import LazyKeOpsError

# Variable categories, as in pykeops: indexed by i, indexed by j, or a parameter.
CAT_I, CAT_J, CAT_P = 0, 1, 2
CAT_NAMES = {CAT_I: "Vi", CAT_J: "Vj", CAT_P: "Pm"}

# Positions of placeholder variables that passes put into formulas and take out again.
# They sit far above any real argument position, and apart from each other (one range
# each, a base plus a small index), so that a Var's position tells which kind it is.
SCALAR_POS = 1 << 28  # compile/chunking.py: scalar s of the chunked outputs, at + s
PART_POS = 1 << 29  # compile/chunking.py: chunked sum m, at + m
PLACEHOLDER_POS = 1 << 30  # formula/autodiff.py: the cotangent that `diff` drops


@dataclass(frozen=True)
class OpSpec:
    """Everything lazykeops knows about one operation.

    name:        spelling in the formula language, e.g. "Exp".
    arity:       number of formula (node) arguments.
    params:      names of the integer parameters that follow them, e.g. ("n",) for Pow.
    dim:         dim(arg_dims, params) -> output dim; raises LazyKeOpsError when invalid.
    emit:        emit(out, args, params) -> list of C++ lines (see formula.emit).
    reference:   reference(args, params) -> torch tensor; args are torch tensors whose last
                 axis is the formula dimension and whose leading axes broadcast.
    domain:      for the registry test, one sampler name per argument ("any", "positive",
                 "unit", "nonzero") and a dict of example parameters.
    vjp:         vjp(node, grad_node) -> tuple of nodes (None for a zero gradient).

    What the passes read instead of lists of op names:
    componentwise: component k of the output depends only on component k of each argument
                 (dimension-1 arguments broadcast): both engines may evaluate such ops
                 on a chunk of components (compile/chunking.py), and a slice of the
                 output is the op of the same slice of the arguments (formula/slicing.py).
    additive:    the output is one scalar, the sum over the components of the arguments
                 (all of one dimension) of a componentwise expression of them, so it is
                 additive over any split of the components: the chunk planner computes
                 it chunk by chunk (compile/chunking.py).
    uniform:     every component of the output holds the same value, and the op's last
                 parameter is the output dimension: `resized` rebuilds it over another
                 number of components (the chunk functions, compile/chunking.py).
    constant:    constant(params) -> C++ expression of the value (of every component), for
                 the ops Python knows the value of (no argument): the code generator
                 inlines it instead of filling an array, the passes take it as a leaf.
    slice:       slice(node, start, length, part) -> components start .. start + length - 1
                 of `node` computed without the others, for ops neither componentwise nor
                 of dimension 1 (formula/slicing.py): a node, or a generator yielding
                 `part(arg, start, length)` (a slice of an argument) and receiving it.
    """

    name: str
    arity: int
    params: tuple
    dim: Callable
    emit: Callable
    reference: Callable
    domain: tuple = ()
    example_params: tuple = ()
    example_dims: Optional[tuple] = None
    vjp: Optional[Callable] = None
    doc: str = ""
    componentwise: bool = False
    additive: bool = False
    uniform: bool = False
    constant: Optional[Callable] = None
    slice: Optional[Callable] = None

    def resized(self, node, dim):
        """`node`, of a uniform op, rebuilt over `dim` components."""
        return make(self.name, *node.args, params=node.params[:-1] + (dim,))


OPS: dict = {}


def register(spec: OpSpec) -> OpSpec:
    if spec.name in OPS:
        raise RuntimeError(f"operation {spec.name} registered twice")
    OPS[spec.name] = spec
    return spec


class Node:
    """One interned formula node. Build with `make`, never directly."""

    __slots__ = ("op", "args", "params", "dim", "_str", "__weakref__")

    def __init__(self, op, args, params, dim):
        self.op = op
        self.args = args
        self.params = params
        self.dim = dim
        self._str = None

    def __repr__(self):
        return f"Node({render(self, TEXT_LIMIT)})"  # bounded: debuggers and pytest call it

    def __str__(self):
        if self._str is None:
            self._str = render(self)
        return self._str

    # Convenience used by the code generator and the evaluator.
    def walk(self):
        """All nodes reachable from this one, children before parents, each once (an
        explicit stack: formulas can be far deeper than Python's recursion limit)."""
        order, seen = [], {id(self)}
        stack = [(self, iter(self.args))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, iter(child.args)))
                    break
            else:
                stack.pop()
                order.append(node)
        return order

    def variables(self):
        """The Var nodes of the formula, sorted by position."""
        found = {n.params[0]: n for n in self.walk() if n.op == "Var"}
        return [found[k] for k in sorted(found)]


# The interned nodes, held weakly: a formula built and dropped is freed, with the nodes
# only it used. An entry's key holds the node's children (its args), so a live node keeps
# its whole subgraph interned, and a dead one releases it.
_INTERNED = weakref.WeakValueDictionary()


def make(op, *args, params=()):
    """Return the interned node `op(args; params)`, checking the dimension rule."""
    if type(params) is not tuple:
        params = tuple(params)
    key = (op, args, params)
    node = _INTERNED.get(key)
    if node is not None:  # the common case first: this is on every call's path
        return node
    spec = OPS.get(op)
    if spec is None:
        raise LazyKeOpsError(f"unknown operation '{op}'")
    checked = tuple(checked_param(op, p) for p in params)
    if checked != params or any(type(a) is not type(b) for a, b in zip(checked, params)):
        return make(op, *args, params=checked)  # numpy integers: interned as Python ints
    if len(args) != spec.arity:
        raise LazyKeOpsError(
            f"operation {op} takes {spec.arity} formula argument(s), got {len(args)}")
    if len(params) != len(spec.params):
        raise LazyKeOpsError(
            f"operation {op} takes {len(spec.params)} integer parameter(s) "
            f"({', '.join(spec.params) or 'none'}), got {len(params)}")
    dim = spec.dim([a.dim for a in args], params)
    node = Node(op, args, params, dim)
    _INTERNED[key] = node
    return node


# Integer parameters reach C++ as int or int64; the constants' own rules check theirs,
# which are emitted as floating literals (formula/elementwise.py).
_PARAM_LIMIT = 2 ** 63 - 1
_UNBOUNDED = ("IntCst", "IntInv", "RatCst")


def checked_param(op, p):
    """An op's parameter as a Python int (float for FloatCst, tuple for index lists), or
    the project's error: a tensor, a string or an integer past int64 never reaches a
    dimension rule or the C++ text."""
    if isinstance(p, tuple):
        return tuple(checked_param(op, q) for q in p)
    if isinstance(p, numbers.Integral) and not isinstance(p, bool):
        p = int(p)
        if abs(p) > _PARAM_LIMIT and op not in _UNBOUNDED:
            raise LazyKeOpsError(f"parameter {p} of {op} does not fit in a 64-bit integer")
        return p
    if op == "FloatCst" and isinstance(p, numbers.Real) and not isinstance(p, bool):
        return float(p)
    raise LazyKeOpsError(f"operation {op} takes integer parameters, got {p!r} "
                         f"({type(p).__name__})")


def var(pos: int, dim: int, cat: int) -> Node:
    """The formula variable number `pos`, of dimension `dim` and category `cat`."""
    return make("Var", params=(pos, dim, cat))


# How much of a formula the messages, logs and generated comments quote.
TEXT_LIMIT = 400


def render(node, limit=None):
    """Formula-language text of a node (the parser reads it back). A shared subtree is
    written out at each use, so the text of a small graph can be exponentially long:
    with `limit`, the text stops after about that many characters, ending in '...'."""
    pieces, length = [], 0
    stack = [node]  # nodes still to write, and literal strings between them
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            text = item
        elif item._str is not None:
            text = item._str
        elif item.op == "Var":
            text = "Var({},{},{})".format(*item.params)
        elif item.op == "IntCst":
            text = f"IntCst({item.params[0]})"
        else:
            parts = [*item.args, *[_render_param(p) for p in item.params]]
            stack.append(")")
            for k in range(len(parts) - 1, -1, -1):
                stack.append(parts[k])
                if k:
                    stack.append(",")
            text = f"{item.op}("
        pieces.append(text)
        length += len(text)
        if limit is not None and length > limit:
            return "".join(pieces)[:limit] + "..."
    return "".join(pieces)


def _render_param(p):
    if isinstance(p, tuple):
        return "Ind(" + ",".join(str(x) for x in p) + ")"
    return str(p)


def dim_error(op, detail):
    """The error a dimension rule raises: names the op and what did not fit."""
    return LazyKeOpsError(f"dimension mismatch in {op}: {detail}")


def param_error(op, detail):
    """The error a rule raises for an integer parameter out of its range."""
    return LazyKeOpsError(f"parameter of {op} out of range: {detail}")
