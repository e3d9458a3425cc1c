"""Chunked evaluation over wide variables, for both engines.

A thread of the CUDA engine keeps its row's i-variables in registers and reads the
j-variables of a tile of terms from shared memory. Variables of hundreds or thousands of
components fit in neither. The CPU engine vectorises its loop over terms only when the
formula's own loops are unrolled, which stops at some hundred components. In the formulas
that have such variables (distances and scalar products between embeddings, kernels of
them), the wide variables mostly enter through sums over their components of
componentwise expressions: Sum, SqNorm2, SqDist, Scalprod, the ops marked `additive` in
the registry (formula/node.py: OpSpec). Such sums are additive over any split of the
components, so the engines compute them CHUNK components at a time for
a tile of terms, keeping one partial sum per (term, sum) (in registers on the GPU, in a
per-thread buffer on the CPU), and then evaluate the rest of the formula, to which each
sum is a scalar (csrc/lk_cuda_chunked.cuh, csrc/lk_cpu_engine.h).

On the CPU, an output that is itself componentwise in the wide variables and in scalars
(the gradients of kernels in x and y: c_ij (x_i - y_j)) is computed chunk by chunk too,
from the scalars (c_ij) that `eval` computes once per term.

`plan_chunks` finds the sums (and CPU outputs) to chunk; it gives None when no variable is
wide, or when a wide variable is also used outside them (the CUDA engine then reads that
variable's components from global memory at each use, the CPU engine runs `eval` on the
whole formula: correct, but slower).
"""

from dataclasses import dataclass

from ..formula.autodiff import substitute
from ..formula.node import CAT_P, OPS, PART_POS, SCALAR_POS, make, var
from ..formula.trampoline import trampoline

# Components per chunk; every generated source defines it as LK_CHUNK for the engines
# (compile/codegen.py: engine_defines; CHUNK in csrc/lk_layout.h).
CHUNK = 32
# i- and j-variables with more 32-bit words than this are wide; the generated source
# defines it as LK_CUDA_X_REGISTERS, the CUDA engine's register limit for a row's
# i-variables (csrc/lk_cuda_tiles.cuh) (on the H100: D = 160 ran 2.7x faster in registers
# than in chunks, D = 256 spilled registers and ran 7x slower).
WIDE_ABOVE_WORDS = 160
WORDS = {"float64": 2}  # 32-bit words per compute scalar (halves compute in float)
# The CPU engine: variables of more components than this are wide. Past the unrolling
# limit (codegen.MAX_UNROLL) chunked sums keep the SIMD loop over j that `eval`'s own
# loops lose: 16-20x faster at D = 200 to 1024; below it they won 1.3-1.5x from D = 64 to
# 128, tied at 32 and lost 1.3x (argKmin) at 17 (benchmarks/bench_cpu_wide.py).
CPU_WIDE_ABOVE = CHUNK


@dataclass(frozen=True)
class ChunkPlan:
    """width: the number of components of every wide variable; wide: their positions;
    sums: the chunked sum nodes; rest: the formulas, chunked sum m replaced by the
    placeholder Var(PART_POS + m, 1, CAT_P), None for a chunked output.

    CPU only: outputs holds (formula index, expression) for the formulas computed chunk
    by chunk, componentwise in the wide variables and in scalars, scalar s replaced by
    the placeholder Var(SCALAR_POS + s, 1, CAT_P); `eval` computes `scalars` (chunked sums
    replaced as in rest) after the other formulas' values."""

    width: int
    wide: frozenset
    sums: tuple
    rest: tuple
    outputs: tuple = ()
    scalars: tuple = ()


def plan_chunks(formulas, args, dtype="float32", target="cuda"):
    """The ChunkPlan of `formulas` over the argument table `args` ((cat, dim) per
    position) for the engine of `target`, or None if nothing is wide or a wide variable
    escapes the chunked sums (and, on the CPU, the chunked outputs)."""
    width = max((d for c, d in args if c != CAT_P), default=0)
    if target == "cpu":
        if width <= CPU_WIDE_ABOVE:
            return None
    elif width * WORDS.get(dtype, 1) <= WIDE_ABOVE_WORDS:
        return None
    return plan_over(formulas, args, width, target)


def plan_over(formulas, args, width, target="cuda"):
    """The ChunkPlan of `formulas` taking the variables of `width` components as the wide
    ones, whatever their width (compile/tensor_cores.py plans narrower ones), or None. The
    plan's rest and sums are those of the formulas `as_sums` rewrote."""
    formulas = tuple(as_sums(f) for f in formulas)
    wide = frozenset(p for p, (c, d) in enumerate(args) if c != CAT_P and d == width)
    sums = []
    for f in formulas:
        for node in f.walk():
            if OPS[node.op].additive and node not in sums and _chunkable(node, wide, width):
                sums.append(node)
    mapping = {node: var(PART_POS + m, 1, CAT_P) for m, node in enumerate(sums)}
    rest = [substitute(f, mapping) for f in formulas]
    outputs, scalars = [], {}
    for index, f in enumerate(rest):
        if not _uses(f, wide):
            continue
        output = _componentwise_output(f, wide, width, scalars) if target == "cpu" else None
        if output is None:
            return None
        outputs.append((index, output))
        rest[index] = None
    if any(_uses(s, wide) for s in scalars):
        return None
    return ChunkPlan(width, wide, tuple(sums), tuple(rest), tuple(outputs), tuple(scalars))


def as_sums(formula):
    """`formula` with the norms and distances that are sums in disguise written as the sums
    the plan chunks: Norm2(e) as Sqrt(SqNorm2(e)), WeightedSqDist(w, x, y) as
    w * SqDist(x, y) for a scalar w and as Sum(w * (x - y)**2) for a diagonal one (on the
    CPU at D = 256, 6.4x faster than the unchunked WeightedSqDist)."""
    mapping = {}
    for n in formula.walk():
        if n.op == "Norm2":
            mapping[n] = make("Sqrt", make("SqNorm2", n.args[0]))
        elif n.op == "WeightedSqDist":
            w, x, y = n.args
            if w.dim == 1:
                mapping[n] = make("Mult", w, make("SqDist", x, y))
            elif w.dim == x.dim:
                mapping[n] = make("Sum", make("Mult", w, make("Square", make("Subtract", x, y))))
    return substitute(formula, mapping) if mapping else formula


def _uses(node, wide):
    return any(v.params[0] in wide for v in node.variables())


def _componentwise_output(node, wide, width, scalars):
    """`node` (of `width` components) as a componentwise expression of wide variables,
    parameters of `width` components, constants and broadcast scalars, each scalar subtree
    replaced by a placeholder numbered in `scalars`; None if it is not one."""
    return trampoline(_output_rewrite(node, wide, width, scalars, {}))


def _output_rewrite(node, wide, width, scalars, memo):
    """_componentwise_output, memoised, as a generator of its recursive calls."""
    if node not in memo:
        memo[node] = yield _output_rule(node, wide, width, scalars, memo)
    return memo[node]


def _output_rule(node, wide, width, scalars, memo):
    if node.op == "Var" and node.params[0] < SCALAR_POS:  # an argument
        pos, dim, cat = node.params
        return node if pos in wide or dim == 1 or (cat == CAT_P and dim == width) else None
    spec = OPS[node.op]
    if node.dim == 1 and spec.constant is None:  # chunked sums' placeholders too
        s = scalars.setdefault(node, len(scalars))
        return var(SCALAR_POS + s, 1, CAT_P)
    if spec.constant is not None:
        return node if node.dim in (1, width) else None
    if node.dim != width or not (spec.componentwise or spec.uniform):
        return None
    # Componentwise, or uniform (SumT: a scalar repeated): rebuilt over rewritten arguments.
    args = []
    for a in node.args:
        args.append((yield _output_rewrite(a, wide, width, scalars, memo)))
    return None if any(a is None for a in args) else make(node.op, *args, params=node.params)


def _chunkable(node, wide, width):
    """A sum over `width` components of a componentwise expression of wide variables,
    parameters of `width` components, and scalars."""
    if node.args[0].dim != width:
        return False
    for arg in node.args:
        for n in arg.walk():
            if n.op == "Var":
                pos, dim, cat = n.params
                if not (pos in wide or dim == 1 or (cat == CAT_P and dim == width)):
                    return False
            elif OPS[n.op].constant is not None:
                if n.dim not in (1, width):
                    return False
            elif not OPS[n.op].componentwise:
                return False
    return True


def restricted(nodes, width, length):
    """`nodes` rewritten over `length` components: every leaf of `width` components (wide
    variables, wide parameters, and uniform ops: zeros, broadcast scalars) shrunk to
    `length`."""
    mapping = {}
    for node in nodes:
        for n in node.walk():
            if n.op == "Var" and n.dim == width:
                pos, _, cat = n.params
                mapping[n] = var(pos, length, cat)
            elif OPS[n.op].uniform and n.dim == width:
                mapping[n] = OPS[n.op].resized(n, length)
    return tuple(substitute(node, mapping) for node in nodes)


def restricted_sums(plan, length):
    """The chunked sums rewritten over `length` components."""
    return restricted(plan.sums, plan.width, length)
