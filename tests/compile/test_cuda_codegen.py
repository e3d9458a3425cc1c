"""The generated CUDA kernels compile: render a representative set of formulas and
reductions for the CUDA engine and compile them with the local nvcc for sm_90 (no GPU
needed, so codegen errors show in CI). Skipped where nvcc is absent."""

import pytest

from lazykeops.compile.codegen import render_source
from lazykeops.compile.spec import KernelSpec
from lazykeops.formula.aliases import parse_aliases
from lazykeops.formula.parser import parse_formula
from lazykeops.formula import var
from tests.compile.nvcc_checks import NVCC, compile_all

ALIASES = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)", "S = Pm(9)"]
CASES = [
    ("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None),
    ("Sum", "Sqrt(SqNorm2(X-Y)) + Log(1 + Abs(Sum(X*Y))) * Sin(G) / (Cos(G) + 2)", None, None),
    ("Sum", "IfElse(G - 1, Clamp(X, Y, X + 1), Step(X) * ReLU(Y))", None, None),
    ("Sum", "Pow(Rsqrt(1 + SqDist(X,Y)), 3) * Powf(1 + G*G, G) * Atan2(G, 1 + G)", None, None),
    ("Sum", "Concat(Elem(X, 0) * B, Extract(Y, 1, 2))", None, None),
    ("Sum", "MatVecMult(S, X) + TensorProd(Elem(X,1), Y) + WeightedSqDist(S, X, Y)", None, None),
    ("LogSumExp", "-G*SqDist(X,Y)", "B", None),
    ("SumSoftMaxWeight", "-G*SqDist(X,Y)", "B", None),
    ("Min_ArgMin", "X - Y", None, None),
    ("KMin_ArgKMin", "SqDist(X,Y)", None, 5),
]
# Wide variables: chunked sums (a partial last chunk: 1000 = 31 * 32 + 8), and a use
# outside sums (tiles shorter than a block, in dynamic shared memory past 48 KB).
WIDE_ALIASES = ["X = Vi(1000)", "Y = Vj(1000)", "B = Vj(1)", "W = Pm(1000)"]
WIDE_CASES = [("Sum", "Exp(-SqDist(X,Y) + Scalprod(W, X)) * B", None, None),
              ("ArgKMin", "SqDist(X,Y)", None, 3),
              ("Sum", "Exp(-SqDist(X,Y)) * Elem(Y, 0) * B", None, None)]


# Tensor cores (csrc/lk_cuda_mma.cuh): distances (centred, a ragged K: 70 components) and
# scalar products, one per reduction family; with narrow j-variables and parameters.
TC_ALIASES = ["X = Vi(70)", "Y = Vj(70)", "B = Vj(3)", "G = Pm(1)", "W = Pm(70)"]
TC_CASES = [("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None),
            ("LogSumExp", "(X|Y) * G", "B", None),
            ("ArgMin", "SqNorm2(X-Y)", None, None),
            ("KMin_ArgKMin", "Sqrt(Sum(Square(X-Y)))", None, 4),
            ("ArgMin", "WeightedSqDist(W,X,Y)", None, None)]
TC_MODES = {"float32": "tf32", "float16": "f16", "bfloat16": "bf16"}


def _spec(red, formula, formula2, k, dtype, alias_texts=ALIASES, tensor_cores=""):
    aliases = parse_aliases(alias_texts)
    nodes = {a.name: var(a.pos, a.dim, a.cat) for a in aliases}
    formulas = [parse_formula(formula, nodes)]
    if formula2:
        formulas.append(parse_formula(formula2, nodes))
    return KernelSpec(tuple(formulas), tuple((a.cat, a.dim) for a in aliases), red, k, dtype,
                      target="cuda", tensor_cores=tensor_cores)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_generated_code_compiles_with_nvcc_for_sm90(tmp_path, dtype):
    # Every case in float32; the other dtypes change only the types: a few cases each.
    cases = CASES if dtype == "float32" else [CASES[0], CASES[6], CASES[9]]
    specs = [_spec(*case, dtype) for case in cases] + \
        [_spec(*case, dtype, WIDE_ALIASES) for case in WIDE_CASES]
    if dtype in TC_MODES:
        tc = [_spec(*case, dtype, TC_ALIASES, TC_MODES[dtype]) for case in TC_CASES]
        assert all("TC_MODE" in render_source(spec) for spec in tc)
        specs += tc if dtype == "float32" else tc[:2]
    sources = []
    for n, spec in enumerate(specs):
        path = tmp_path / f"check{n}.cu"
        path.write_text(render_source(spec))
        sources.append(path)
    # The first (a Gaussian sum) with its host launch code, the rest as device code only.
    for path, returncode, stderr in compile_all(sources):
        assert returncode == 0, f"{path.read_text()}\n{stderr}"
