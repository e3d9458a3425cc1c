"""The one exception type users see, and helpers that build its messages.

Every error a user can trigger (bad formula string, dimension mismatch, wrong argument
shapes, dtypes or devices) is a `LazyKeOpsError`, raised before any compilation, and its
message names the formula and the offending argument.
"""


class LazyKeOpsError(ValueError):
    """Bad input to lazykeops: the message says which formula and which argument."""


class CompileError(RuntimeError):
    """The C++/CUDA compiler rejected generated code: carries the source path and first error."""


def formula_error(formula, culprit, expected):
    """Build the standard message: which formula, which argument, what was expected."""
    where = f" in formula '{formula}'" if formula else ""
    return LazyKeOpsError(f"{culprit}{where}: {expected}")
