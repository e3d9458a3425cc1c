"""Kernel names for `kernel_product`: the 2018 KeOps mini-language, parsed and rendered.

`Kernel("gaussian(x,y) * (1 + linear(u,v)**2)")` parses its string (a small recursive
descent, never eval) into a tree of named kernels on pairs of variables, integer constants,
`+`, `*` and `** n`. Each distinct pair `(x,y)` is a feature space: `x` is i-indexed, `y`
j-indexed, in order of first appearance. Each named kernel that takes a gamma owns a
gamma slot, numbered in order of appearance.

`render(kernel, spaces, slots)` turns the tree into two strings of the formula language:
the kernel k(x_i, y_j) and its logarithm c = log k (closed forms where the kernel has one,
`Log(k)` otherwise), used by the log-domain modes of `modes.py`. The squared
distance of a radial kernel is `WeightedSqDist(G, X, Y)`, which reads G of dim 1, D or D*D
as an isotropic, diagonal or full (row-major) metric.

The formulas and the choices behind them are written out in docs/kernels.md.
"""

import difflib
import re
from collections import namedtuple

from ..errors import LazyKeOpsError

# A named kernel: whether it reads a gamma, whether it needs a degree (polynomial), the
# kernel and its log as templates in {d2} (= gamma-weighted |x-y|^2), {gxy} (= gamma-
# weighted <x,y>), {xy} (= <x,y>) and {n} (degree); log None means Log(kernel).
KernelDef = namedtuple("KernelDef", "gamma degree value log")

KERNELS = {
    "gaussian": KernelDef(True, False, "Exp(-{d2})", "-{d2}"),
    "laplacian": KernelDef(True, False, "Exp(-Sqrt({d2}))", "-Sqrt({d2})"),
    "exponential": KernelDef(True, False, "Exp(-Sqrt({d2}))", "-Sqrt({d2})"),
    "matern32": KernelDef(True, False, "(1 + Sqrt(3*{d2})) * Exp(-Sqrt(3*{d2}))",
                          "Log(1 + Sqrt(3*{d2})) - Sqrt(3*{d2})"),
    "matern52": KernelDef(True, False,
                          "(1 + Sqrt(5*{d2}) + 5*{d2}/3) * Exp(-Sqrt(5*{d2}))",
                          "Log(1 + Sqrt(5*{d2}) + 5*{d2}/3) - Sqrt(5*{d2})"),
    "cauchy": KernelDef(True, False, "Inv(1 + {d2})", "-Log(1 + {d2})"),
    "inverse_multiquadric": KernelDef(True, False, "Rsqrt(1 + {d2})",
                                      "-0.5 * Log(1 + {d2})"),
    "linear": KernelDef(False, False, "{xy}", None),
    "polynomial": KernelDef(True, True, "(1 + {gxy})**{n}", "{n} * Log(1 + {gxy})"),
    "distance": KernelDef(True, False, "Sqrt({d2})", "0.5 * Log({d2})"),
    "energy": KernelDef(True, False, "-Sqrt({d2})", None),
}
KERNELS["energy_distance"] = KERNELS["energy"]

_TOKEN = re.compile(r"\s*(?:(?P<int>\d+)|(?P<name>[A-Za-z_]\w*)|(?P<op>\*\*|[-+*/(),]))")
_VARIABLE = re.compile(r"[a-z][a-z0-9_]*$")

Call = namedtuple("Call", "name space degree slot")   # one named kernel in the tree


def kernel_error(text, detail, pos=None):
    caret = "" if pos is None else f"\n    {text}\n    {' ' * pos}^ (position {pos})"
    return LazyKeOpsError(f"kernel '{text}': {detail}{caret}")


def _tokenize(text):
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            bad = text[pos:].lstrip()
            raise kernel_error(text, f"unexpected character {bad[0]!r}",
                               len(text) - len(bad))
        kind = m.lastgroup
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    return tokens


class _Parser:
    """sum := prod ('+' prod)* ; prod := power ('*' power)* ; power := atom ('**' int)? ;
    atom := int | name '(' var ',' var [',' int] ')' | '(' sum ')'."""

    def __init__(self, text):
        self.text, self.tokens, self.i = text, _tokenize(text), 0
        self.spaces, self.calls, self.owner = [], [], {}

    def peek(self):
        return self.tokens[self.i]

    def take(self, text=None, kind=None):
        tok = self.peek()
        if (text is not None and tok[1] != text) or (kind is not None and tok[0] != kind):
            return None
        self.i += 1
        return tok

    def fail(self, detail, tok=None):
        tok = tok or self.peek()
        got = f"'{tok[1]}'" if tok[0] != "end" else "end of kernel"
        return kernel_error(self.text, f"unexpected {got}: {detail}", tok[2])

    def need(self, text, what):
        if self.take(text) is None:
            raise self.fail(f"expected '{text}' {what}")

    def parse(self):
        tree = self.sum()
        if self.peek()[0] != "end":
            raise self.fail("expected '+', '*', '**' or the end (kernels combine with "
                            "+, * and ** only)")
        if not self.calls:
            raise kernel_error(self.text, "names no kernel, so it has no variables "
                               "(expected e.g. 'gaussian(x,y)')")
        return tree

    def sum(self):
        tree = self.product()
        while self.take("+"):
            tree = ("add", tree, self.product())
        return tree

    def product(self):
        tree = self.power()
        while self.take("*"):
            tree = ("mul", tree, self.power())
        return tree

    def power(self):
        tree = self.atom()
        if self.take("**"):
            tok = self.take(kind="int")
            if tok is None or int(tok[1]) < 1:
                raise self.fail("the exponent after '**' must be a positive integer",
                                tok)
            tree = ("pow", tree, int(tok[1]))
        return tree

    def atom(self):
        tok = self.peek()
        if self.take(kind="int"):
            return ("int", int(tok[1]))
        if self.take("("):
            tree = self.sum()
            self.need(")", f"to close the '(' at position {tok[2]}")
            return tree
        if self.take(kind="name"):
            return ("call", self.call(tok))
        raise self.fail("expected a kernel name, an integer or '('")

    def call(self, tok):
        name = tok[1]
        if name not in KERNELS:
            close = difflib.get_close_matches(name.lower(), list(KERNELS), n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}?" if close else \
                f"known kernels: {', '.join(KERNELS)}"
            raise kernel_error(self.text, f"unknown kernel name '{name}'; {hint}", tok[2])
        self.need("(", f"after the kernel name '{name}'")
        x = self.variable()
        self.need(",", f"between the two variables of '{name}'")
        y = self.variable()
        if x == y:
            raise kernel_error(self.text, f"'{name}({x},{y})' uses one variable twice; the "
                               "first variable is the i-indexed x, the second the "
                               "j-indexed y (e.g. 'gaussian(x,y)')", tok[2])
        degree = None
        if KERNELS[name].degree:
            self.need(",", f"then the degree: '{name}({x},{y},d)' with d an integer")
            deg = self.take(kind="int")
            if deg is None or int(deg[1]) < 1:
                raise self.fail(f"the degree of '{name}' must be a positive integer", deg)
            degree = int(deg[1])
        self.need(")", f"to close '{name}('")
        slot = sum(c.slot is not None for c in self.calls) if KERNELS[name].gamma else None
        call = Call(name, self.space(x, y, tok), degree, slot)
        self.calls.append(call)
        return call

    def variable(self):
        tok = self.take(kind="name")
        if tok is None or not _VARIABLE.match(tok[1]):
            raise self.fail("expected a variable name (lower case, e.g. x, y, u, v)", tok)
        return tok[1]

    def space(self, x, y, tok):
        """The index of the feature space (x, y), checking that no variable is shared
        between two different pairs (each x and y names one tensor of the call)."""
        pair = (x, y)
        if pair not in self.spaces:
            for role, v in (("i", x), ("j", y)):
                if v in self.owner:
                    other = self.spaces[self.owner[v]]
                    raise kernel_error(self.text, f"variable '{v}' appears in the pairs "
                                       f"({other[0]},{other[1]}) and ({x},{y}); each "
                                       "feature space needs its own two variables", tok[2])
            self.owner[x] = self.owner[y] = len(self.spaces)
            self.spaces.append(pair)
        return self.spaces.index(pair)


class Kernel:
    """A kernel for `kernel_product`, named in the 2018 KeOps mini-language.

    Kernel("gaussian(x,y)"), Kernel("gaussian(x,y) * (1 + linear(u,v)**2)"), ...
    Names: gaussian, laplacian, exponential, matern32, matern52, cauchy,
    inverse_multiquadric, linear, polynomial(x,y,d), distance, energy (see docs/kernels.md).

    Attributes: `name` (the text), `spaces` (the (x, y) variable pairs, one per feature
    space, in order of appearance), `calls` (the named kernels in order of appearance)
    and `n_gammas` (how many of them read a gamma).
    """

    def __init__(self, name):
        if not isinstance(name, str):
            raise LazyKeOpsError(f"Kernel expects a string such as 'gaussian(x,y)', got "
                                 f"{type(name).__name__}")
        parser = _Parser(name)
        self.name = name
        self.tree = parser.parse()
        self.spaces = tuple(parser.spaces)
        self.calls = tuple(parser.calls)
        self.n_gammas = sum(c.slot is not None for c in self.calls)

    def __repr__(self):
        return f"Kernel({self.name!r})"

    def __eq__(self, other):
        return isinstance(other, Kernel) and other.name == self.name

    def __hash__(self):
        return hash(self.name)


def _scalar_product(g, gdim, d, x, y):
    """<x, y> weighted by gamma: g <x,y>, <x, diag(g) y> or <x, G y>."""
    if gdim == 1:
        return f"{g}*({x}|{y})"
    if gdim == d:
        return f"({x}|{g}*{y})"
    return f"({x}|MatVecMult({g},{y}))"


def render(kernel, spaces, slots):
    """(kernel formula, log-kernel formula) for the given aliases.

    spaces: one (X alias, Y alias, dim) per feature space; slots: one (gamma alias, gamma
    dim) per gamma slot."""

    def leaf(call):
        x, y, d = spaces[call.space]
        g, gdim = slots[call.slot] if call.slot is not None else (None, None)
        fields = {"xy": f"({x}|{y})", "n": call.degree}
        if g is not None:
            fields["d2"] = f"WeightedSqDist({g},{x},{y})"
            fields["gxy"] = _scalar_product(g, gdim, d, x, y)
        spec = KERNELS[call.name]
        value = spec.value.format(**fields)
        return f"({value})", f"({spec.log.format(**fields)})" if spec.log else f"Log({value})"

    def walk(tree):
        kind = tree[0]
        if kind == "call":
            return leaf(tree[1])
        if kind == "int":
            return f"{tree[1]}", f"Log({tree[1]})"
        if kind == "pow":
            value, log = walk(tree[1])
            return f"({value}**{tree[2]})", f"({tree[2]}*{log})"
        (a, la), (b, lb) = walk(tree[1]), walk(tree[2])
        if kind == "mul":
            return f"({a} * {b})", f"({la} + {lb})"
        return f"({a} + {b})", f"Log({a} + {b})"

    return walk(kernel.tree)
