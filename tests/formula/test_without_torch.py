"""lazykeops.formula and lazykeops.numpy import and run without torch.

Each check runs in a fresh interpreter where `import torch` fails. The numpy reductions
(a Gaussian Sum, an ArgKMin, a LazyTensor sum) are built there from scratch, in a cache of
their own: compile/build.py then calls the compiler directly, and keys the kernels with
"no torch" in place of torch's version; checked against numpy float64 references.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # any import of torch fails\n"

REDUCTIONS = """
import json
import numpy as np
import lazykeops.numpy as lknp
from lazykeops.compile import build
rng = np.random.default_rng(0)
x, y = rng.standard_normal((40, 3)), rng.standard_normal((50, 3))
b = rng.standard_normal((50, 2))
gauss = lknp.Genred("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)
knn = lknp.Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="ArgKMin",
                  opt_arg=4, axis=1)
X, Y = lknp.LazyTensor(x[:, None, :]), lknp.LazyTensor(y[None, :, :])
lazy = (-((X - Y) ** 2).sum(-1)).exp().sum(dim=1)
try:
    build.load_kernel("#error rejected-by-design", "a broken source")
except build.CompileError as err:
    rejected = str(err)
print(json.dumps({"gauss": gauss(x, y, b).tolist(), "knn": knn(x, y).tolist(),
                  "lazy": lazy.tolist(), "builds": build.stats["builds"],
                  "torch": sys.modules.get("torch") is not None, "rejected": rejected}))
"""


def _run(code, **env_vars):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), **env_vars}
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


def test_numpy_reductions_build_and_run_without_torch(tmp_path):
    got = json.loads(_run(BLOCK_TORCH + REDUCTIONS, LAZYKEOPS_CACHE_DIR=str(tmp_path)))
    assert got["builds"] == 3 and not got["torch"]
    # the compiler's own first error, and the source kept, as for torch's builds
    assert "a broken source failed" in got["rejected"]
    assert "#error rejected-by-design" in got["rejected"] and "failed/" in got["rejected"]
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((50, 3))
    b = rng.standard_normal((50, 2))
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(got["gauss"], np.exp(-d2) @ b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got["lazy"], np.exp(-d2).sum(1)[:, None], rtol=1e-12)
    np.testing.assert_array_equal(np.array(got["knn"]).astype(int), np.argsort(d2, 1)[:, :4])
    # Keyed "no torch": the kernels torch builds from the same sources have keys of their own.
    from lazykeops.compile.build import NO_TORCH, cache_key, key_entries
    manifests = sorted(tmp_path.glob("*/manifest.json"))
    assert len(manifests) == 3
    for path in manifests:
        manifest = json.loads(path.read_text())
        assert manifest["key_entries"]["torch"] == NO_TORCH
        source = (path.parent / "kernel.cpp").read_text()
        assert cache_key(source) != manifest["key"]
        with_torch = dict(key_entries(source))
        assert with_torch.pop("torch") == torch.__version__
        assert with_torch == {k: v for k, v in manifest["key_entries"].items() if k != "torch"}
