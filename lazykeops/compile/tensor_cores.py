"""Tensor-core plans: which CUDA formulas compute their wide part as a small GEMM.

A formula whose i-variable X and j-variable Y (both of D components) enter only through
sums over their components (compile/chunking.py) of the forms

    s * <X, Y>          (Scalprod, Sum(X * Y), ...)        kind "dot"
    s * |X - Y|^2       (SqDist, SqNorm2(X - Y), Sum((X - Y)**2), Norm2 = sqrt of it)  "dist"

(s a number), or the same sums weighted componentwise by a parameter W of D components,
Sum(W * X * Y) and Sum(W * (X - Y)**2) (WeightedSqDist(W, X, Y) with a diagonal weight;
with a scalar weight it is W * SqDist(X, Y)), needs, per pair, only the scalar product
<W X, Y> of the pair and, for distances, the squared norms sum W X^2 and sum W Y^2 (per
row and per term): the tile of dot products of a block's rows and a tile of terms is a
matrix product, which the tensor cores compute (csrc/lk_cuda_mma.cuh); the rest of the
formula runs per pair on the finished sums, as for a chunked formula. Distances are
computed from data centred on one point of the block (a distance does not change when
both points move): the operands rounded to TF32 or to a half precision then lose
precision relative to the block's spread, not to the distance from the origin.

The operand precision (`mode`, `mode_for`) is the caller's: "tf32" for float32 data where
torch allows it (torch.get_float32_matmul_precision() "high" or "medium", or the same
names given to `float32_precision` around the calls), "f16" / "bf16" for half-precision
data (their products are exact in the float32 accumulators).
"""

import contextlib
import contextvars
import math
from dataclasses import dataclass

from ..errors import LazyKeOpsError
from ..formula.node import CAT_I, CAT_J, CAT_P, OPS, make
from .chunking import plan_over

MODES = {"tf32": 1, "f16": 2, "bf16": 3}  # TC_MODE in the generated source
# Below this many components a pair's distance costs a few FMAs: CUDA cores are as fast
# (H200, benchmarks/RESULTS.md: D = 16 tensor cores 0.9-1.1x slower, D = 32 1.6-1.7x faster).
MIN_WIDTH = 32
# 32-bit words per row of X or Y (one per component in TF32, one per two in the halves):
# the variant holds a warp's rows as A fragments in registers (80 per thread at 160 words)
# and stages a block's rows once in shared memory (128 rows of 164 words: 84 KB of the
# 227 KB per block of the H100 / H200); wider variables keep the chunked path
# (compile/chunking.py).
MAX_WORDS = 160
# Components of the narrow j-variables a plan takes: each tile holds them twice in shared
# memory (raw, as copied ahead, and converted), 32 terms x 256 components x 8 bytes = 64 KB
# beside the 84 KB above (lk_cuda_mma.cuh takes longer tiles only where they fit beside
# X's staging memory); past that the tile would pass the block's limit where the CUDA-core
# path still runs (around 700 components beside a D = 128 X, Y in TF32).
MAX_NARROW_J = 256


@dataclass(frozen=True)
class TensorCorePlan:
    """chunks: the ChunkPlan (its sums are the plan's sums, in order); x, y: the positions
    of X and Y; kinds, scales: each sum's kind ("dot" or "dist") and number s; mode;
    weight: the position of the parameter W weighting every sum, or -1."""

    chunks: object
    x: int
    y: int
    kinds: tuple
    scales: tuple
    mode: str
    weight: int = -1

    @property
    def distances(self):
        return self.kinds[0] == "dist"


PRECISIONS = ("highest", "high", "medium")
_PRECISION = contextvars.ContextVar("lazykeops_float32_precision", default=None)


@contextlib.contextmanager
def float32_precision(precision):
    """Within the block, float32 reductions take tensor cores as torch's float32 matmul
    precision `precision` would allow ("highest": never, "high" / "medium": TF32), whatever
    torch's own setting: the per-call override (lazykeops.float32_precision)."""
    if precision not in PRECISIONS:
        raise LazyKeOpsError(f"float32 precision must be one of {PRECISIONS}, got "
                             f"{precision!r}")
    token = _PRECISION.set(precision)
    try:
        yield
    finally:
        _PRECISION.reset(token)


def mode_for(dtype, target):
    """The operand precision tensor cores may use for `dtype` data on `target` ("cpu" or
    "cuda:sm_XY"): "" on the CPU, before sm_80, for float64, and for float32 when the
    precision (float32_precision's, else torch.get_float32_matmul_precision()) is
    "highest" (torch's default: full float32 accuracy, as torch's own matmul keeps it)."""
    if not target.startswith("cuda:sm_") or int(target[len("cuda:sm_"):]) < 80:
        return ""
    if dtype == "float32":
        precision = _PRECISION.get()
        if precision is None:
            import torch

            precision = torch.get_float32_matmul_precision()
        return "tf32" if precision != "highest" else ""
    return {"float16": "f16", "bfloat16": "bf16"}.get(dtype, "")


def plan_tensor_cores(formulas, args, mode):
    """The TensorCorePlan of `formulas` over `args` ((cat, dim) per position) for operands
    in `mode`, or None when the formula is not of that shape."""
    if mode not in MODES:
        return None
    width = max((d for c, d in args if c != CAT_P), default=0)
    words = width if mode == "tf32" else (width + 1) // 2
    if width < MIN_WIDTH or words > MAX_WORDS:
        return None
    used = {v.params[0] for f in formulas for v in f.variables()}
    wide = [(p, args[p][0]) for p in sorted(used)
            if args[p][1] == width and args[p][0] != CAT_P]
    if sorted(c for _, c in wide) != [CAT_I, CAT_J]:
        return None
    x = next(p for p, c in wide if c == CAT_I)
    y = next(p for p, c in wide if c == CAT_J)
    if sum(args[p][1] for p in used if args[p][0] == CAT_J and p != y) > MAX_NARROW_J:
        return None
    chunks = plan_over(formulas, args, width)  # WeightedSqDist and Norm2 as sums
    if chunks is None or chunks.outputs:
        return None
    shapes = [_classify(node, x, y, args, width) for node in chunks.sums]
    if not shapes or any(s is None for s in shapes):
        return None
    kinds = tuple(k for k, _, _ in shapes)
    if len(set(kinds)) != 1:  # centring is valid for distances only: one kind per formula
        return None
    weights = {w for _, _, w in shapes}
    if len(weights) != 1:  # the weight scales the MMA's X operand: one for every sum
        return None
    return TensorCorePlan(chunks, x, y, kinds, tuple(s for _, s, _ in shapes), mode,
                          weights.pop())


# A summand as a polynomial of degree <= 2 in x = X_k and y = Y_k: {monomial: coefficient},
# monomials "" (constant), "x", "y", "xx", "xy", "yy".
def _poly(node, x, y):
    if node.op == "Var":
        pos = node.params[0]
        return {"x": 1.0} if pos == x else {"y": 1.0} if pos == y else None
    value = _constant(node)
    if value is not None:
        return {"": value} if value else {}
    args = [_poly(a, x, y) for a in node.args]
    if any(a is None for a in args):
        return None
    if node.op == "Add":
        return _combine(args[0], args[1], 1.0)
    if node.op == "Subtract":
        return _combine(args[0], args[1], -1.0)
    if node.op == "Minus":
        return _combine({}, args[0], -1.0)
    if node.op == "Mult":
        return _product(args[0], args[1])
    if node.op == "Square" or (node.op == "Pow" and node.params == (2,)):
        return _product(args[0], args[0])
    if node.op == "Divide" and set(args[1]) == {""}:
        return _combine({}, args[0], 1.0 / args[1][""])
    return None


def _constant(node):
    spec = OPS[node.op]
    if spec.constant is None:
        return None
    p = node.params
    return {"IntCst": lambda: float(p[0]), "FloatCst": lambda: float(p[0]),
            "RatCst": lambda: p[0] / p[1], "IntInv": lambda: 1.0 / p[0],
            "Zero": lambda: 0.0}.get(node.op, lambda: None)()


def _combine(a, b, scale):
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0.0) + scale * c
    return {m: c for m, c in out.items() if c != 0.0}


def _product(a, b):
    out = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = "".join(sorted(ma + mb))
            if len(m) > 2:
                return None
            out[m] = out.get(m, 0.0) + ca * cb
    return {m: c for m, c in out.items() if c != 0.0}


def _summand(node):
    """The sum node's summand, as a node over one component."""
    a = node.args
    return {"Scalprod": lambda: make("Mult", a[0], a[1]),
            "SqNorm2": lambda: make("Square", a[0]),
            "SqDist": lambda: make("Square", make("Subtract", a[0], a[1])),
            "Sum": lambda: a[0]}.get(node.op, lambda: None)()


def _factors(node):
    """The factors of a product (nested Mult nodes), in order; [node] for another node."""
    if node.op != "Mult":
        return [node]
    return _factors(node.args[0]) + _factors(node.args[1])


def _classify(node, x, y, args, width):
    """(kind, s, weight) for a sum of s * x y ("dot") or of s * (x - y)^2 ("dist"), each
    possibly times the component of a parameter of `width` components (at position
    `weight`, else -1), else None."""
    summand = _summand(node)
    if summand is None:
        return None
    factors = _factors(summand)
    weights = [f for f in factors
               if f.op == "Var" and tuple(args[f.params[0]]) == (CAT_P, width)]
    weight = -1
    if weights:
        weight = weights[0].params[0]
        factors.remove(weights[0])
        summand = factors[0]
        for f in factors[1:]:
            summand = make("Mult", summand, f)
    p = _poly(summand, x, y)
    if not p:
        return None
    if set(p) == {"xy"}:
        return "dot", p["xy"], weight
    s = p.get("xx")
    if set(p) == {"xx", "xy", "yy"} and math.isclose(p["yy"], s) \
            and math.isclose(p["xy"], -2.0 * s):
        return "dist", s, weight
    return None
