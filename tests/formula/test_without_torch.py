"""lazykeops.formula and lazykeops.numpy import and run without torch.

Each check runs in a fresh interpreter where `import torch` fails. The one place that still
needs torch on the numpy path is the build layer (compile/build.py): the cache key names
torch's version and Ninja is driven through torch.utils.cpp_extension. So a numpy reduction
is checked with a stand-in torch holding nothing but its version string, on kernels built
just before with torch: anything else reading torch would fail there.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # any import of torch fails\n"

VERSION_ONLY_TORCH = f"""
import sys, types
stand_in = types.ModuleType("torch")
stand_in.__version__ = {torch.__version__!r}
stand_in.version = types.SimpleNamespace(cuda=None)
sys.modules["torch"] = stand_in
"""

REDUCTIONS = """
import numpy as np
import lazykeops.numpy as lknp
x = np.linspace(0, 1, 30).reshape(10, 3)
y = np.linspace(0, 2, 36).reshape(12, 3)
g = lknp.Genred("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"], axis=1)
b = np.ones((12, 1))
X, Y = lknp.LazyTensor(x[:, None, :]), lknp.LazyTensor(y[None, :, :])
lazy = (-((X - Y) ** 2).sum(-1)).exp().sum(dim=1)
print(g(x, y, b).ravel().tolist())
print(lazy.ravel().tolist())
"""


def _run(code):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_imports_need_no_torch():
    code = BLOCK_TORCH + textwrap.dedent("""
        import lazykeops.formula
        from lazykeops.formula import autodiff, evaluate, parser, reductions, slicing
        import lazykeops.numpy, lazykeops.numpy.cluster
        from lazykeops.compile import codegen
        f = parser.parse_formula("Grad(Exp(-SqDist(X, Y)), X, E)",
                                 {"X": lazykeops.formula.var(0, 3, 0),
                                  "Y": lazykeops.formula.var(1, 3, 1),
                                  "E": lazykeops.formula.var(2, 1, 2)})
        print(len(f.variables()), sys.modules["torch"])
        """)
    assert _run(code).split() == ["3", "None"]


def test_numpy_reductions_read_no_torch_but_its_version():
    built = _run(REDUCTIONS)  # with torch: builds the two kernels into the shared cache
    assert _run(VERSION_ONLY_TORCH + REDUCTIONS) == built
    x = np.linspace(0, 1, 30).reshape(10, 3)
    y = np.linspace(0, 2, 36).reshape(12, 3)
    expected = np.exp(-((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)).sum(1)
    for line in built.splitlines():
        np.testing.assert_allclose(json.loads(line), expected, rtol=1e-12)
