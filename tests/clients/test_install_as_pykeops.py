"""install_as_pykeops(): pykeops's module names give lazykeops's objects, lazily and
idempotently; it refuses to shadow a real pykeops that was imported first."""

import importlib
import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import lazykeops
import lazykeops.numpy
import lazykeops.numpy.cluster
import lazykeops.torch
import lazykeops.torch.cluster
from lazykeops import LazyKeOpsError


def run_child(code, **env):
    """Run `code` in a fresh interpreter; (returncode, stdout + stderr)."""
    import os

    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env={**os.environ, **env}, timeout=120)
    return out.returncode, out.stdout + out.stderr


def test_same_objects_both_ways(pykeops):
    import pykeops.numpy
    import pykeops.torch
    from pykeops.common.lazy_tensor import GenericLazyTensor
    from pykeops.torch.lazytensor.LazyTensor import LazyTensor as DeepLazyTensor

    assert pykeops.torch.LazyTensor is lazykeops.torch.LazyTensor is DeepLazyTensor
    assert pykeops.numpy.LazyTensor is lazykeops.numpy.LazyTensor
    assert pykeops.torch.Genred is lazykeops.torch.Genred
    from pykeops.torch.generic.generic_ops import generic_logsumexp
    assert generic_logsumexp is lazykeops.torch.generic_logsumexp
    from pykeops.numpy.cluster import grid_cluster as numpy_grid_cluster
    from pykeops.torch.cluster import from_matrix, grid_cluster
    assert grid_cluster is lazykeops.torch.cluster.grid_cluster
    assert from_matrix is lazykeops.torch.cluster.from_matrix
    assert numpy_grid_cluster is lazykeops.numpy.cluster.grid_cluster
    x = torch.rand(5, 3)
    ours = lazykeops.torch.LazyTensor(x[:, None, :])
    theirs = pykeops.torch.Vj(x)
    assert isinstance(ours, pykeops.torch.LazyTensor) and isinstance(ours, GenericLazyTensor)
    assert isinstance(theirs, lazykeops.torch.LazyTensor)
    assert isinstance(pykeops.numpy.Vi(np.ones((4, 2))), GenericLazyTensor)
    assert not isinstance(pykeops.numpy.Vi(np.ones((4, 2))), pykeops.torch.LazyTensor)


def test_solver_and_complex_names(pykeops):
    from pykeops.common.lazy_tensor import ComplexGenericLazyTensor
    from pykeops.numpy.operations import KernelSolve as NumpyKernelSolve
    from pykeops.torch import ComplexLazyTensor, KernelSolve
    from pykeops.torch.lazytensor.LazyTensor import ComplexLazyTensor as DeepComplex

    assert KernelSolve is lazykeops.torch.KernelSolve
    assert NumpyKernelSolve is lazykeops.numpy.KernelSolve
    assert ComplexLazyTensor is DeepComplex is lazykeops.torch.ComplexLazyTensor
    z = ComplexLazyTensor(torch.randn(4, 1, 2, dtype=torch.complex64))
    assert isinstance(z, ComplexGenericLazyTensor)
    assert not isinstance(lazykeops.torch.Vi(torch.rand(4, 2)), ComplexGenericLazyTensor)


def test_module_attributes(pykeops):
    assert pykeops.__version__ == "2.3" and pykeops.lazykeops_version == lazykeops.__version__
    assert importlib.util.find_spec("pykeops") is sys.modules["pykeops"].__spec__
    assert importlib.util.find_spec("pykeops.torch") is not None
    assert importlib.util.find_spec("pykeops.nonexistent") is None
    with pytest.raises(ModuleNotFoundError, match="pykeops.nonexistent"):
        importlib.import_module("pykeops.nonexistent")
    import pykeops.config
    from lazykeops.compile.nvrtc import compiler
    assert pykeops.config.gpu_available is (torch.cuda.is_available() and compiler() is not None)
    assert pykeops.config.torch_found and pykeops.torch_found and pykeops.numpy_found
    assert lazykeops.install_as_pykeops() is pykeops  # idempotent
    from lazykeops.compat.pykeops_modules import PyKeOpsFinder
    assert sum(isinstance(f, PyKeOpsFinder) for f in sys.meta_path) == 1


def test_missing_names_are_named(pykeops):
    import pykeops.torch

    with pytest.raises(AttributeError, match="no attribute 'not_a_keops_name'"):
        pykeops.torch.not_a_keops_name
    with pytest.raises(ImportError, match="not_a_keops_name"):
        from pykeops.torch import not_a_keops_name  # noqa: F401
    from pykeops.torch import LazyTensor, Vi  # unrelated names still import
    assert LazyTensor is lazykeops.torch.LazyTensor and Vi is lazykeops.torch.Vi


def test_functions(pykeops, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAZYKEOPS_VERBOSE", "0")
    pykeops.set_verbose(True)
    assert pykeops.verbose is True
    pykeops.set_verbose(False)
    assert pykeops.verbose is False
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path / "a"))
    pykeops.set_build_folder(tmp_path / "b")
    assert pykeops.get_build_folder() == str(tmp_path / "b")
    pykeops.set_build_folder(str(tmp_path / "a"))
    assert pykeops.test_torch_bindings() and pykeops.test_numpy_bindings()
    assert "torch bindings are working" in capsys.readouterr().out
    assert any((tmp_path / "a").iterdir())
    pykeops.clean_pykeops()
    assert not any(p for p in (tmp_path / "a").iterdir() if p.is_dir())
    import lazykeops.__main__ as selfcheck  # check_health() is `python -m lazykeops`
    for status, healthy in [(0, True), (1, False)]:
        monkeypatch.setattr(selfcheck, "main", lambda status=status: status)
        assert pykeops.check_health() is healthy


def test_lazy_import_and_find_spec_in_child():
    # install_as_pykeops() and `import pykeops` import neither torch nor numpy.
    rc, out = run_child("""
        import sys, importlib.util, lazykeops
        assert importlib.util.find_spec("pykeops") is None or "pkvenv" in sys.prefix
        pk = lazykeops.install_as_pykeops()
        import pykeops
        assert pykeops is pk and importlib.util.find_spec("pykeops") is pk.__spec__
        assert "torch" not in sys.modules and "numpy" not in sys.modules, sorted(sys.modules)
        from pykeops.torch import LazyTensor
        import lazykeops.torch
        assert LazyTensor is lazykeops.torch.LazyTensor
        print("OK")
    """)
    assert rc == 0 and "OK" in out, out


def test_refuses_a_real_pykeops_imported_first(tmp_path):
    (tmp_path / "pykeops").mkdir()
    (tmp_path / "pykeops" / "__init__.py").write_text("__version__ = '2.3'\n")
    rc, out = run_child("""
        import pykeops, lazykeops
        try:
            lazykeops.install_as_pykeops()
        except lazykeops.LazyKeOpsError as err:
            print("refused:", err)
        import sys
        assert sys.modules["pykeops"] is pykeops
    """, PYTHONPATH=str(tmp_path))
    assert rc == 0 and "refused: install_as_pykeops(): a pykeops is already imported" in out, out
    assert str(tmp_path) in out


def test_uninstall_leaves_no_pykeops():
    from lazykeops.compat.pykeops_modules import _FINDER, install, uninstall

    was_installed = _FINDER in sys.meta_path  # by the fixture of another test of this file
    try:
        install()
        import pykeops.torch  # noqa: F401
        uninstall()
        assert not any(n == "pykeops" or n.startswith("pykeops.") for n in sys.modules)
        assert importlib.util.find_spec("pykeops") is None or "pkvenv" in sys.prefix
        sys.modules["pykeops"] = object()
        try:
            with pytest.raises(LazyKeOpsError, match="already imported"):
                install()
        finally:
            del sys.modules["pykeops"]
    finally:
        if was_installed:
            install()
