"""The string formula language: formula strings to interned nodes.

This module owns the formula text front end: a recursive-descent parser over the tokens
of tokens.py ("Exp(-G*SqDist(X,Y)) * B"); alias strings ("X = Vi(3)") are parsed in
aliases.py. The grammar rules are generators run by formula/trampoline.py, so that
formulas nested thousands deep parse without Python recursion. It knows no op by name
except the sugar (`+ - * / ** | [k]`, literals, variable constructors) and the symbolic
derivatives (autodiff.DERIVATIVES): every other `Name(...)` call is looked up in the `OPS`
registry, so ops added by other modules parse without touching this file.
User text is never handed to Python's eval/exec/ast.

Grammar (lowest precedence first):
    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := '-' unary | power
    power   := postfix ('**' unary)?              # right-associative, as in Python
    postfix := primary ('[' int ']')*
    primary := number | name | name '(' args ')' | '(' sum ('|' sum | ',' sum)? ')'
    arg     := sum | index tuple | None
Index tuples (the parameters of TensorDot, Kron, ...) are written Ind(2,3) as in KeOps 1,
or [2,3] and (2,3) / (1,) / () as in pykeops 2, whose formula strings are Python;
pykeops's 7-argument TensorDot(..., permute) is read into TensorDotPermuted.
"""

import difflib
import inspect
import math
from collections.abc import Mapping

from ..errors import LazyKeOpsError, formula_error
from . import autodiff
from .aliases import VAR_CATS, alias_vars
from .node import OPS, make
from .tokens import caret, tokenize
from .trampoline import trampoline

# The symbolic derivatives (autodiff.DERIVATIVES) take formula arguments only: their
# number is the builder's.
_DERIVATIVE_ARITY = {name: len(inspect.signature(build).parameters)
                     for name, build in autodiff.DERIVATIVES.items()}

# Ops whose parameter is a real number rather than an integer (so str(node) reads back).
FLOAT_PARAM_OPS = {"FloatCst"}

# ---------------------------------------------------------------------------- formulas


class _FormulaParser:
    """Recursive descent over the tokens: one method per grammar rule (a generator that
    yields its sub-rules to the trampoline and receives their nodes), plus helpers."""

    def __init__(self, text, aliases):
        self.text = text
        self.aliases = aliases
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, ahead=0):
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self):
        tok = self.peek()
        self.i += 1
        return tok

    def at(self, text):
        return self.peek().kind == "op" and self.peek().text == text

    def accept(self, text):
        return self.next() if self.at(text) else None

    def fail(self, culprit, detail, tok=None):
        tok = tok or self.peek()
        return formula_error(self.text, culprit, f"{detail}{caret(self.text, tok.pos)}")

    def expect(self, text, what):
        if self.accept(text) is None:
            tok = self.peek()
            got = f"'{tok.text}'" if tok.kind != "end" else "end of formula"
            raise self.fail(f"unexpected {got}", f"expected '{text}' {what}")

    def signed_number(self):
        """Optional '-' then a number literal, or None (cursor unchanged) if not there."""
        neg = self.at("-")
        tok = self.peek(1 if neg else 0)
        if tok.kind not in ("int", "float"):
            return None
        self.i += 2 if neg else 1
        value = int(tok.text) if tok.kind == "int" else float(tok.text)
        return -value if neg else value

    def integer(self, what):
        start = self.peek()
        value = self.signed_number()
        if not isinstance(value, int):
            got = f"'{start.text}'" if start.kind != "end" else "end of formula"
            raise self.fail(got, f"expected an integer for {what}", start)
        return value

    def int_list(self, what, close=")"):
        """int (',' int)* then `close`, the opening bracket already consumed."""
        values = []
        if not self.accept(close):
            values.append(self.integer(what))
            while self.accept(","):
                values.append(self.integer(what))
            self.expect(close, f"to close {what}")
        return values

    def build(self, op, *args, params=(), tok=None):
        """make(), with dimension errors re-raised naming the formula and position."""
        try:
            return make(op, *args, params=params)
        except LazyKeOpsError as err:
            raise self.fail(str(err), "", tok) from None

    def parse(self):
        node = yield self.sum()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected '{self.peek().text}'", "expected an operator or end")
        return node

    def sum(self):
        node = yield self.product()
        while self.at("+") or self.at("-"):
            tok = self.next()
            op = "Add" if tok.text == "+" else "Subtract"
            node = self.build(op, node, (yield self.product()), tok=tok)
        return node

    def product(self):
        node = yield self.unary()
        while self.at("*") or self.at("/"):
            tok = self.next()
            op = "Mult" if tok.text == "*" else "Divide"
            node = self.build(op, node, (yield self.unary()), tok=tok)
        return node

    def unary(self):
        tok = self.accept("-")
        if tok is None:
            return (yield self.power())
        node = yield self.unary()
        # Negated literals stay constants, so "-1" is IntCst(-1), not Minus(IntCst(1)).
        if node.op in ("IntCst", "FloatCst"):
            return self.build(node.op, params=(-node.params[0],), tok=tok)
        return self.build("Minus", node, tok=tok)

    def power(self):
        base = yield self.postfix()
        tok = self.accept("**")
        if tok is None:
            return base
        exponent = yield self.unary()     # Python: 2**-1 is allowed, and ** is right-assoc
        return self.power_node(base, exponent, tok)

    def power_node(self, base, exponent, tok):
        """x**2 -> Square, x**n -> Pow, x**0.5 -> Sqrt, x**-0.5 -> Rsqrt, else Powf."""
        value = exponent.params[0] if exponent.op in ("IntCst", "FloatCst") else None
        if exponent.op == "IntCst":
            if value == 2:
                return self.build("Square", base, tok=tok)
            return self.build("Pow", base, params=(value,), tok=tok)
        if value == 0.5:
            return self.build("Sqrt", base, tok=tok)
        if value == -0.5:
            return self.build("Rsqrt", base, tok=tok)
        return self.build("Powf", base, exponent, tok=tok)

    def postfix(self):
        node = yield self.primary()
        while self.at("["):
            tok = self.next()
            index = self.integer("an index inside [...]")
            self.expect("]", "to close the index")
            node = self.build("Elem", node, params=(index,), tok=tok)
        return node

    def primary(self):
        tok = self.peek()
        value = self.signed_number() if tok.kind in ("int", "float") else None
        if value is not None:
            return self.number(value, tok)
        if tok.kind == "name":
            self.next()
            if self.accept("("):
                return (yield self.call(tok))
            return self.variable(tok)
        if self.accept("("):
            return (yield self.group(tok))
        got = f"'{tok.text}'" if tok.kind != "end" else "end of formula"
        raise self.fail(f"unexpected {got}", "expected an operand")

    def group(self, open_tok):
        """'(' a ')', or the scalar products '(a|b)' and (KeOps 2018) '(a,b)'."""
        left = yield self.sum()
        sep = self.accept("|") or self.accept(",")
        if sep is not None:
            right = yield self.sum()
            self.expect(")", f"to match the '(' at position {open_tok.pos}")
            return self.build("Scalprod", left, right, tok=sep)
        self.expect(")", f"to match the '(' at position {open_tok.pos}")
        return left

    def variable(self, tok):
        node = self.aliases.get(tok.text)
        if node is None:
            known = ", ".join(sorted(self.aliases)) or "none"
            raise self.fail(f"unknown variable '{tok.text}'", f"(known aliases: {known})",
                            tok)
        return node

    def call(self, tok):
        name = tok.text
        if name in VAR_CATS:
            ints = self.int_list(f"the arguments of {name}")
            if len(ints) != 2:
                raise self.fail(f"'{name}'", "inside a formula, takes (pos, dim)", tok)
            return self.build("Var", params=(ints[0], ints[1], VAR_CATS[name]), tok=tok)
        if name == "Ind":
            raise self.fail("'Ind(...)'", "is an index tuple, expected a formula", tok)
        if name in autodiff.DERIVATIVES:
            return (yield self.derivative(name, tok))
        spec = OPS.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(OPS) + list(VAR_CATS), n=3)
            hint = f"did you mean {' or '.join(close)}?" if close else "no such op"
            raise self.fail(f"unknown operation '{name}'", hint, tok)
        return self.apply(spec, tok, (yield self.arguments()))

    def derivative(self, name, tok):
        """Grad(f, x, e), Diff(f, x, u), GradMatrix(f, x), Divergence(f, x), Laplacian(f, x):
        symbolic derivatives, expanded here into plain formulas (x must be a variable)."""
        build, arity = autodiff.DERIVATIVES[name], _DERIVATIVE_ARITY[name]
        args = yield self.arguments()
        if len(args) != arity:
            raise self.fail(f"wrong number of arguments for '{name}'",
                            f"expected {arity} formula arguments, got {len(args)}", tok)
        nodes = [self.as_formula(name, t, a) for t, a in args]
        if nodes[1].op != "Var":
            raise self.fail(f"'{args[1][0].text}'", f"{name} differentiates with respect to a "
                            "variable", args[1][0])
        try:
            return build(*nodes)
        except LazyKeOpsError as err:
            raise self.fail(str(err), "", tok) from None

    def arguments(self):
        """The raw arguments of a call: ('node', Node) | ('num', n) | ('ind', tuple) |
        ('pair', (m, n)) (a tuple or a scalar product) | ('none', None)."""
        args = []
        if self.accept(")"):
            return args
        while True:
            tok = self.peek()
            arg = yield self.argument()
            # Keep the argument's source text: errors quote what the user wrote.
            source = self.text[tok.pos:self.peek().pos].strip()
            args.append((tok._replace(text=source), arg))
            if self.accept(")"):
                return args
            self.expect(",", "or ')' between arguments")

    def argument(self):
        tok = self.peek()
        listed = self.index_list()
        if listed is not None:
            return listed
        if tok.kind == "name" and tok.text == "None" and self.peek(1).text in (",", ")"):
            self.i += 1
            return "none", None
        # A lone (signed) number is kept as such: it may be an integer parameter.
        start = self.i
        value = self.signed_number()
        if value is not None and (self.at(",") or self.at(")")):
            return "num", value
        self.i = start
        return "node", (yield self.sum())

    def index_list(self):
        """An index tuple argument, or None (cursor unchanged): Ind(2,3) (KeOps 1),
        [2,3] or a Python tuple (2,3) / (1,) / () (pykeops 2, whose strings are Python)."""
        if self.peek().kind == "name" and self.peek().text == "Ind" and self.peek(1).text == "(":
            self.i += 2
            return "ind", tuple(self.int_list("Ind(...)"))
        if self.accept("["):
            return "ind", tuple(self.int_list("the index list [...]", "]"))
        return self.paren_tuple() if self.at("(") else None

    def paren_tuple(self):
        """'(' ints ')' ending an argument. (4) is 4, as in Python; (2,3) is a tuple as a
        parameter and the KeOps 2018 scalar product (2|3) as a formula ('pair')."""
        start, values, commas = self.i, [], 0
        self.i += 1
        while not self.at(")"):
            value = self.signed_number()
            if not isinstance(value, int) or not (self.at(",") or self.at(")")):
                self.i = start
                return None
            values.append(value)
            commas += self.accept(",") is not None
        self.i += 1
        if not (self.at(",") or self.at(")")):
            self.i = start
            return None
        if commas == 0 and len(values) == 1:
            return "num", values[0]
        return ("pair" if commas == 1 and len(values) == 2 else "ind"), tuple(values)

    def apply(self, spec, tok, args):
        """Split a call's arguments into formulas then parameters, as OPS says."""
        name, n_params = spec.name, len(spec.params)
        if name == "TensorDot" and len(args) == 7:
            return self.tensordot_permuted(tok, args)
        if len(args) != spec.arity + n_params:
            params = f" and {n_params} parameter(s) ({', '.join(spec.params)})" \
                if n_params else ""
            raise self.fail(f"wrong number of arguments for '{name}'",
                            f"expected {spec.arity} formula argument(s){params}, "
                            f"got {len(args)}", tok)
        nodes = [self.as_formula(name, t, a) for t, a in args[:spec.arity]]
        params = [self.as_param(spec, k, t, a)
                  for k, (t, a) in enumerate(args[spec.arity:])]
        return self.build(name, *nodes, params=tuple(params), tok=tok)

    def tensordot_permuted(self, tok, args):
        """pykeops's TensorDot(a, b, dimfa, dimfb, contfa, contfb, permute): kept axis k
        lands at output axis permute[k], so lazykeops's order is permute's inverse."""
        ptok, (kind, perm) = args[6]
        if kind == "none":
            return self.apply(OPS["TensorDot"], tok, args[:6])
        if kind not in ("ind", "pair") or sorted(perm) != list(range(len(perm))):
            raise self.fail(f"'{ptok.text}'", "is not a permutation [0, ..., n-1] for the "
                            "argument permute of TensorDot", ptok)
        order = tuple(sorted(range(len(perm)), key=perm.__getitem__))
        if order == tuple(range(len(order))):
            return self.apply(OPS["TensorDot"], tok, args[:6])
        return self.apply(OPS["TensorDotPermuted"], tok, [*args[:6], (ptok, ("ind", order))])

    def as_formula(self, name, tok, arg):
        kind, value = arg
        if kind == "node":
            return value
        if kind == "pair":  # (2,3): the KeOps 2018 scalar product of two literals
            return self.build("Scalprod", *(self.number(v, tok) for v in value), tok=tok)
        if kind == "none":
            raise self.fail("'None'", f"is not a formula (argument of {name})", tok)
        if kind == "ind":
            raise self.fail(f"'{tok.text}'", f"is an index tuple but {name} expects a formula "
                            "argument here", tok)
        return self.number(value, tok)

    def number(self, value, tok):
        """A literal operand: IntCst for integers, FloatCst otherwise."""
        if not _fits_float64(value):
            raise self.fail(f"literal '{tok.text}'", "is out of the float64 range "
                            "(about +-1.8e308)", tok)
        op = "IntCst" if isinstance(value, int) else "FloatCst"
        return self.build(op, params=(value,), tok=tok)

    def as_param(self, spec, k, tok, arg):
        kind, value = arg
        what = f"parameter '{spec.params[k]}' of {spec.name}"
        if kind in ("ind", "pair") or (kind == "num" and isinstance(value, int)):
            return value
        if kind == "num" and spec.name in FLOAT_PARAM_OPS:
            return value
        got = {"num": "number", "none": "None"}.get(kind, "formula")
        raise self.fail(f"'{tok.text}'", f"is a {got}, expected an integer for {what}", tok)


def _fits_float64(value):
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer literal past 1.8e308
        return False


def parse_formula(text, aliases):
    """Formula string -> interned Node. `aliases` maps names to Var nodes (or is
    a list of Alias); every error is a LazyKeOpsError naming the formula."""
    if not isinstance(text, str):
        raise LazyKeOpsError(f"formula must be a string, got {type(text).__name__}")
    if not text.strip():
        raise LazyKeOpsError("empty formula ''")
    if not isinstance(aliases, Mapping):
        aliases = alias_vars(aliases)   # a list of Alias, as parse_aliases returns
    return trampoline(_FormulaParser(text, dict(aliases)).parse())
