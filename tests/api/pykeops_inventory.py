"""Print pykeops 2.3's public names, one per line, as 'scope name': the rows that
docs/pykeops_api.md must have. Run with a Python where the real pykeops is installed
(tests/api/test_pykeops_table.py does, when LAZYKEOPS_PYKEOPS_PYTHON names one).
With --signatures: the parameters of every LazyTensor method, as JSON."""

import inspect
import warnings

TOP_LEVEL = ("check_health", "clean_pykeops", "config", "get_build_folder", "set_build_folder",
             "set_verbose", "show_cuda_status", "test_numpy_bindings", "test_torch_bindings",
             "__version__")
# Operators and protocol methods that are part of the API (the other dunders are Python's).
DUNDERS = {"__call__", "__matmul__", "__getitem__", "__pow__", "__add__", "__radd__", "__sub__",
           "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__neg__",
           "__abs__", "__or__", "__ror__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
           "__ge__", "__min__", "__max__", "__array_ufunc__", "__str__", "__repr__", "__init__"}


def inventory():
    warnings.filterwarnings("ignore")
    import pykeops.numpy as pn
    import pykeops.torch as pt
    import pykeops.torch.cluster as cluster
    from pykeops.torch import ComplexLazyTensor, Genred, KernelSolve, LazyTensor

    rows = [("pykeops", n) for n in TOP_LEVEL]
    front_end = sorted(pt.__all__) + ["ComplexLazyTensor", "cluster"]
    rows += [("pykeops.torch", n) for n in front_end]
    rows += [("pykeops.numpy", n) for n in front_end if hasattr(pn, n)]
    rows += [("pykeops.torch.cluster", n) for n in sorted(dir(cluster))
             if not n.startswith("_") and n not in ("utils", "matrix")]
    rows += [("LazyTensor", n) for n in sorted(dir(LazyTensor))
             if not n.startswith("__") or n in DUNDERS]
    rows += [("ComplexLazyTensor", n)
             for n in sorted(set(dir(ComplexLazyTensor)) - set(dir(LazyTensor)))]
    for cls in (Genred, KernelSolve):
        for scope, method in ((f"{cls.__name__}(...)", cls.__init__),
                              (f"{cls.__name__}(...)(...)", cls.__call__)):
            rows += [(scope, n) for n in list(inspect.signature(method).parameters)[1:]]
    return rows


def signatures():
    """(class, method, [(parameter, has a default)]) of every LazyTensor and
    ComplexLazyTensor method, self and *args/**kwargs left out."""
    from pykeops.torch import ComplexLazyTensor, LazyTensor

    rows = []
    for cls in (LazyTensor, ComplexLazyTensor):
        for name in sorted(dir(cls)):
            method = getattr(cls, name)
            if name.startswith("__") and name not in DUNDERS or not inspect.isfunction(method):
                continue
            params = [(p.name, p.default is not p.empty)
                      for p in list(inspect.signature(method).parameters.values())[1:]
                      if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            rows.append((cls.__name__, name, params))
    return rows


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:] == ["--signatures"]:
        print(json.dumps(signatures()))
    else:
        for scope, name in inventory():
            print(scope, name)
