"""KernelSpec: everything that determines one compiled kernel, frozen and hashable.

The front ends lower a reduction call to a KernelSpec; the code generator renders it to
source text; the builder keys the cache on that text. Two calls with equal specs share
one compiled library.
"""

from dataclasses import dataclass

from ..formula.node import CAT_I, CAT_J, CAT_P

DTYPES = ("float32", "float64", "float16", "bfloat16")
SUM_SCHEMES = {"auto": "lk::BlockSum", "block_sum": "lk::BlockSum",
               "kahan_scheme": "lk::KahanSum", "direct_sum": "lk::DirectSum"}


@dataclass(frozen=True)
class KernelSpec:
    """formulas: the formula node, then the weight formula for weighted reductions.
    args: (category, dim) for each argument position, categories relative to the
    reduction: CAT_I means indexed like the output, CAT_J indexed by the reduced index.
    reduction: a ReductionSpec name; k: its K (or None); dtype: one of DTYPES (the halves
    only for the CUDA engine);
    sum_scheme: key of SUM_SCHEMES; target: the engine, "cpu" or "cuda"; block_sparse:
    the library takes block-sparse ranges (runtime/ranges.py), and only them (a dense
    library's loops stay exactly what they were); tensor_cores: the operand precision the
    CUDA engine may use on tensor cores ("tf32", "f16", "bf16"; compile/tensor_cores.py),
    "" for none."""

    formulas: tuple
    args: tuple
    reduction: str
    k: object
    dtype: str
    sum_scheme: str = "auto"
    target: str = "cpu"
    block_sparse: bool = False
    tensor_cores: str = ""


def swap_axis(category):
    """Category seen by the engine when the reduction runs over i instead of j."""
    return {CAT_I: CAT_J, CAT_J: CAT_I, CAT_P: CAT_P}[category]
