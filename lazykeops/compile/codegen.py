"""Render a KernelSpec to a small, deterministic C++ source.

The generated text defines only what is specific to the kernel: `struct LkFormula` (the
argument table and `eval`, which computes the formula values for one (i, j) pair) and
`using LkReduction = ...`; the loops live in the engine headers of lazykeops/csrc. `eval`
is plain scalar code over a type T, marked LK_HD, so the same text compiles with g++ for
the CPU engine and with nvcc for the CUDA engine.

Each formula node becomes one local array filled by its op's emission rule, in
topological order; interned nodes make shared subexpressions computed once. Variables
and constants are read in place, never copied.
"""

import re

from ..errors import LazyKeOpsError
from ..formula.emit import Ref
from ..formula.node import CAT_P, OPS, PART_POS, SCALAR_POS, TEXT_LIMIT, make, render
from ..formula.reductions import lookup
from ..runtime.abi import source_prelude
from .chunking import CHUNK, WIDE_ABOVE_WORDS, plan_chunks, restricted, restricted_sums
from .spec import SUM_SCHEMES
from .tensor_cores import MODES, plan_tensor_cores

CPP_TYPES = {"float32": "float", "float64": "double"}
# The CUDA engine's (compute type, storage type) per dtype: half precisions are stored as
# such and computed (and accumulated) in float.
CUDA_TYPES = {"float32": ("float", "float"), "float64": ("double", "double"),
              "float16": ("float", "__half"), "bfloat16": ("float", "__nv_bfloat16")}
# Macros defined before the CUDA engine header (LK_CUDA_BLOCK, ...): empty by default, set
# by benchmarks/tune_cuda.py to compare engine configurations; they change the source, so
# the cache key.
CUDA_TUNING = {}
# A block-sparse library's launch configuration (before CUDA_TUNING): its thread blocks are
# cut at cluster bounds, so fewer rows per block waste fewer threads on clusters of a few
# hundred points (GeomLoss's multiscale, grid clusterings). benchmarks/bench_ranges.py on the
# H200, clusters of ~125 points, Gaussian conv / LogSumExp / ArgKMin at 1e6: 256 x 2 rows
# 6.2 / 8.4 / 14.1 ms, 128 x 1 2.5 / 3.3 / 5.8 ms, 64 x 1 2.5 / 3.0 / 4.9 ms.
SPARSE_CUDA_CONFIG = {"LK_CUDA_BLOCK": 64, "LK_CUDA_RPT": 1}


# Intermediate values and reduction states live on the stack of each engine thread: a
# formula needing more scalars per pair than this is refused (it would overflow it).
MAX_SCALARS_PER_PAIR = 16384


def check_stack_size(formulas, outputs, text):
    """Raise before compiling if a kernel would need too much stack per thread.

    Counted: one array per intermediate node of `eval` (a shared node once), and the
    formula's values with the reduction's state and accumulator (on the GPU; at most twice
    the widths of the formulas and outputs). Not counted, the variables: the CPU engine
    reads them from heap buffers (the parameters packed once per batch, a block's rows,
    the j-variables), the CUDA engine from shared or global memory, and from registers
    only a row's i-variables of up to LK_CUDA_X_REGISTERS words (and the narrow ones of a
    chunked kernel). A parameter of millions of components thus passes; its elementwise
    square, an intermediate as large, does not."""
    inner = {id(n): n.dim for f in formulas for n in f.walk()
             if n.op != "Var" and OPS[n.op].constant is None}
    scalars = sum(inner.values()) + 2 * (sum(f.dim for f in formulas) + sum(outputs))
    if scalars > MAX_SCALARS_PER_PAIR:
        raise LazyKeOpsError(f"formula '{text}' is too large: its intermediate values and "
                             f"reduction state hold {scalars} scalars per pair, more than "
                             f"the supported {MAX_SCALARS_PER_PAIR}")


def render_formula_struct(formulas, args, chunks=None):
    """C++ text of `struct LkFormula` computing the concatenation of `formulas`; with a
    ChunkPlan, `eval` computes the plan's rest, and chunk_full / chunk_tail its sums."""
    lines = _struct_head(formulas, args, chunks)
    if chunks:
        lines += [f"  static constexpr int WIDE = {chunks.width};",
                  f"  static constexpr int NCHUNKED = {len(chunks.sums)};"]
        lines += _render_chunk_function(chunks, args, "chunk_full", CHUNK)
        if chunks.width % CHUNK:
            lines += _render_chunk_function(chunks, args, "chunk_tail", chunks.width % CHUNK)
    if chunks and chunks.outputs:
        lines.append(f"  static constexpr int NSCALARS = {len(chunks.scalars)};")
        offsets = [sum(f.dim for f in formulas[:i]) for i in range(len(formulas))]
        lines += _render_output_function(chunks, args, offsets, "output_full", CHUNK)
        if chunks.width % CHUNK:
            lines += _render_output_function(chunks, args, offsets, "output_tail",
                                             chunks.width % CHUNK)
    return "\n".join(lines + ["};"])


def _struct_head(formulas, args, chunks):
    """The first lines of `struct LkFormula`: the argument table, DIMOUT and `eval`."""
    cats = ", ".join(str(c) for c, _ in args) or "0"
    dims = ", ".join(str(d) for _, d in args) or "0"
    return [
        "struct LkFormula {",
        f"  static constexpr int NARGS = {len(args)};",
        f"  static constexpr int CAT[{max(len(args), 1)}] = {{{cats}}};",
        f"  static constexpr int DIM[{max(len(args), 1)}] = {{{dims}}};",
        f"  static constexpr int DIMOUT = {sum(f.dim for f in formulas)};",
        "  template <class T, class In, class Out>",
        "  LK_HD static LK_INLINE void eval(const In& in, Out out) {",
        *[f"    {_unrolled(line)}" for line in _render_eval_body(formulas, chunks)],
        "  }",
    ]


def render_tensor_core_struct(formulas, args, plan):
    """C++ text of `struct LkFormula` for the tensor-core variant (csrc/lk_cuda_mma.cuh):
    `eval` on the plan's sums, `tc_parts`, which makes them of a pair's MMA accumulator
    (the scalar product; for distances, started at -yn / 2 so that it holds yn / 2 - <x, y>
    and the distance is xn - 2 acc) and the row's squared norm xn, and the plan's
    constants."""
    parts = []
    for m, (kind, scale) in enumerate(zip(plan.kinds, plan.scales)):
        if kind == "dist":  # at least `floor` (0, or -inf for weights of both signs)
            # although rounding may leave a tiny negative difference; NaN stays NaN
            parts.append(f"{{ const T d = fma(T(-2), acc, xn); "
                         f"part[{m}] = T({scale!r}) * (d < floor ? floor : d); }}")
        else:
            parts.append(f"part[{m}] = T({scale!r}) * acc;")
    lines = _struct_head(formulas, args, plan.chunks) + [
        f"  static constexpr int WIDE = {plan.chunks.width};",
        f"  static constexpr int NCHUNKED = {len(plan.chunks.sums)};",
        f"  static constexpr int TC_MODE = {MODES[plan.mode]};  // {plan.mode}",
        f"  static constexpr int TC_X = {plan.x}, TC_Y = {plan.y};",
        f"  static constexpr bool TC_DIST = {'true' if plan.distances else 'false'};",
        f"  static constexpr int TC_W = {plan.weight};",
        "  template <class T>",
        "  LK_HD static LK_INLINE void tc_parts(T acc, T xn, T floor, T* part) {",
        *[f"    {line}" for line in parts],
        "  }",
        "};",
    ]
    return "\n".join(lines)


def _render_chunk_function(plan, args, name, length):
    """part[m] += chunked sum m over `length` components of the wide variables (read
    through the engine's wvar / pvar, which add the chunk's first component)."""
    sums = restricted_sums(plan, length)
    lines, refs = _render_nodes(sums, _wide_leaf(plan, args))
    lines += [f"part[{m}] += {refs[node](0)};" for m, node in enumerate(sums)]
    return ["  template <class T, class In, class Part>",
            f"  LK_HD static LK_INLINE void {name}(const In& in, Part part) {{",
            *[f"    {_unrolled(line)}" for line in lines],
            "  }"]


def _render_output_function(plan, args, offsets, name, length):
    """The chunked outputs' components c0 .. c0 + `length` (c0: the engine's chunk_start),
    from the wide variables' chunk and the scalars `eval` computed."""
    nodes = restricted([node for _, node in plan.outputs], plan.width, length)
    lines, refs = _render_nodes(nodes, _wide_leaf(plan, args))
    for (index, _), node in zip(plan.outputs, nodes):
        lines.append(f"for (int k = 0; k < {length}; ++k) "
                     f"out[{offsets[index]} + in.chunk_start() + k] = {refs[node]('k')};")
    return ["  template <class T, class In, class Out>",
            f"  LK_HD static LK_INLINE void {name}(const In& in, Out out) {{",
            *[f"    {_unrolled(line)}" for line in lines],
            "  }"]


def _wide_leaf(plan, args):
    """Leaves read by the chunk functions: wide variables and wide parameters through the
    engine's wvar / pvar (which add the chunk's first component), scalars through
    scalar<s>()."""
    def leaf(node):
        pos, dim, cat = node.params
        if pos in plan.wide:
            return Ref(dim, f"in.template wvar<{pos}>({{k}})")
        if SCALAR_POS <= pos < PART_POS:
            return Ref(1, f"in.template scalar<{pos - SCALAR_POS}>()")
        if cat == CAT_P and pos < len(args) and args[pos][1] == plan.width:
            return Ref(dim, f"in.template pvar<{pos}>({{k}})")
        return None
    return leaf


_LOOP = re.compile(r"for \(int \w+ = 0; \w+ < (\d+);")
MAX_UNROLL = 128  # longer loops stay loops: compile time and code size matter more


def _unrolled(line):
    """Mark short constant loops for full unrolling (see LK_UNROLL in lk_math.h)."""
    stripped = line.lstrip()
    match = _LOOP.match(stripped)
    if match and int(match.group(1)) <= MAX_UNROLL:
        return line[:len(line) - len(stripped)] + "LK_UNROLL " + stripped
    return line


def _render_nodes(roots, leaf=None):
    """C++ lines computing every node under `roots` once, children first, and each node's
    Ref. leaf(var_node) may give a Var's Ref (None: the engine's `in.var<pos>(k)`)."""
    refs, lines, nodes, seen, counter = {}, [], [], set(), 0
    for f in roots:
        for node in f.walk():
            if id(node) not in seen:
                seen.add(id(node))
                nodes.append(node)
    for node in nodes:
        if node.op == "Var":
            ref = leaf(node) if leaf else None
            refs[node] = ref or Ref(node.dim, f"in.template var<{node.params[0]}>({{k}})")
        elif OPS[node.op].constant is not None:  # inlined: no array
            refs[node] = Ref(node.dim, OPS[node.op].constant(node.params))
        else:
            name = f"v{counter}"
            counter += 1
            out = Ref(node.dim, name + "[{k}]")
            lines.append(f"T {name}[{node.dim}];  // {node.op}")
            lines.extend(OPS[node.op].emit(out, [refs[a] for a in node.args], node.params))
            refs[node] = out
    return lines, refs


def _chunk_part(node):
    """The placeholder of chunked sum m reads the engine's partial sum m."""
    pos = node.params[0]
    return Ref(1, f"in.template part<{pos - PART_POS}>()") if pos >= PART_POS else None


def _render_eval_body(formulas, chunks=None):
    """`eval`: each formula's value at its offset (with a chunk plan: the rest, chunked
    outputs left to output_full / output_tail), then the plan's scalars past DIMOUT."""
    rest = chunks.rest if chunks else formulas
    scalars = chunks.scalars if chunks else ()
    lines, refs = _render_nodes([f for f in rest if f is not None] + list(scalars), _chunk_part)
    offset = 0
    for f, r in zip(formulas, rest):
        if r is not None:
            lines.append(f"for (int k = 0; k < {f.dim}; ++k) out[{offset} + k] = {refs[r]('k')};")
        offset += f.dim
    for s in scalars:
        lines.append(f"out[{offset}] = {refs[s](0)};")
        offset += 1
    return lines


def _negated_columns(spec):
    """DualSum whose column formula is minus its row formula (gradients of kernels of
    x - y with respect to x and y): the rows are computed once and subtracted."""
    return spec.reduction == "DualSum" and spec.formulas[1] is make("Minus", spec.formulas[0])


def emitted_formulas(spec):
    return spec.formulas[:1] if _negated_columns(spec) else spec.formulas


def reduction_policy(spec):
    red = lookup(spec.reduction)
    red.check_target(spec.target, " ; ".join(render(f, TEXT_LIMIT) for f in spec.formulas))
    dim = spec.formulas[0].dim
    wdim = spec.formulas[1].dim if len(spec.formulas) > 1 else 0
    return red.cpp_policy(dim, wdim, spec.k, SUM_SCHEMES[spec.sum_scheme],
                          negated=_negated_columns(spec))


ENGINES = {"cpu": ("lk_cpu_engine.h", "LK_CPU_ENTRY"),
           "cuda": ("lk_cuda_engine.cuh", "LK_CUDA_ENTRY")}


def engine_defines():
    """The #defines of the constants that Python and the engine headers share, emitted at
    the top of every generated source so that the two cannot disagree: the chunk length
    (csrc/lk_layout.h), the register limit for i-variables (csrc/lk_cuda_tiles.cuh) and
    the unrolling limit (csrc/lk_math.h). The headers refuse to compile without them."""
    constants = {"LK_CHUNK": CHUNK, "LK_CUDA_X_REGISTERS": WIDE_ABOVE_WORDS,
                 "LK_MAX_UNROLL": MAX_UNROLL}
    return [f"#define {name} {value}" for name, value in constants.items()]


def render_source(spec, device_only=False):
    """The whole translation unit of a kernel, for the engine of spec.target; with
    `device_only` (CUDA), the device code alone, for NVRTC (compile/nvrtc.py): no ABI
    prelude and host entry points, the launch sizes instead, and no anonymous namespace
    (the module is loaded on its own)."""
    header, entry = ENGINES[spec.target]
    if device_only:
        assert spec.target == "cuda", "device code is CUDA's"
        entry = "LK_CUDA_DEVICE_ENTRY"
    text = " ; ".join(render(f, TEXT_LIMIT) for f in spec.formulas)
    formulas = emitted_formulas(spec)
    chunks = plan_chunks(formulas, spec.args, spec.dtype, spec.target)
    cores = None
    if spec.target == "cuda" and spec.tensor_cores:
        cores = plan_tensor_cores(formulas, spec.args, spec.tensor_cores)
    struct = render_tensor_core_struct(formulas, spec.args, cores) if cores else \
        render_formula_struct(formulas, spec.args, chunks)
    if spec.target == "cuda":
        macros = {**(SPARSE_CUDA_CONFIG if spec.block_sparse else {}), **CUDA_TUNING}
        tuning = [f"#define {name} {value}" for name, value in sorted(macros.items())]
        types = ", ".join(CUDA_TYPES[spec.dtype])
    else:
        tuning, types = [], CPP_TYPES[spec.dtype]
    return "\n".join([
        f"// lazykeops kernel: {spec.reduction} over {text}",
        f"// arguments (category, dim): {list(spec.args)}",
        *([] if device_only else [source_prelude()]),
        *engine_defines(),
        f"#define LK_BLOCK_SPARSE {int(spec.block_sparse)}",
        *tuning,
        f'#include "{header}"',
        "",
        # An anonymous namespace gives the formula and every template instantiated on it
        # internal linkage: two loaded kernels never bind to each other's code.
        *([] if device_only else ["namespace {"]),
        struct,
        "",
        f"using LkReduction = {reduction_policy(spec)};",
        *([] if device_only else ["}  // namespace"]),
        "",
        f"{entry}({types})",
        "",
    ])


def render_merge_source(spec):
    """The device code of the split scheme's merge for spec's reduction policy, for NVRTC:
    it depends on the policy and the types alone (csrc/lk_cuda_kernel.cuh: merge_splits),
    so every formula reduced the same way shares one build (compile/driver.py)."""
    assert spec.target == "cuda", "the split merge is CUDA's"
    return "\n".join([
        f"// lazykeops: the split scheme's merge for {spec.reduction}",
        *engine_defines(),
        '#include "lk_cuda_kernel.cuh"',
        "",
        f"using LkReduction = {reduction_policy(spec)};",
        "",
    ])
