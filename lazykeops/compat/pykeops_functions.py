"""The top-level functions and settings of pykeops 2.3, with lazykeops meanings.

Served as `pykeops.<name>` and `pykeops.config.<name>` once `install_as_pykeops()` ran:

- `set_verbose(flag)`: the compile messages, as `LAZYKEOPS_VERBOSE` (read at each build);
- `clean_pykeops()`: empties lazykeops's kernel cache (`lazykeops.clean_cache()`);
- `get_build_folder()` / `set_build_folder(path)`: lazykeops's cache directory, i.e.
  `LAZYKEOPS_CACHE_DIR` (`None` goes back to the default, `~/.cache/lazykeops`);
- `test_torch_bindings()` / `test_numpy_bindings()`: compile and check pykeops's own
  probe formula, `SqNorm2(x - y)` summed over j, and print whether it works;
- `check_health()`: lazykeops's self-check (`python -m lazykeops`);
- `show_cuda_status()`: prints torch's CUDA, the GPUs and whether nvcc is found;
- `config.gpu_available`, `torch_found`, `numpy_found`: probed when first read, never at
  import (pykeops computes them at import time; lazykeops does nothing then).
"""

import importlib.util
import os
from functools import lru_cache

from .. import __version__ as LAZYKEOPS_VERSION

# Clients compare this with the pykeops releases whose API they need ("2.3" >= "2.1"):
# the version of the API lazykeops reimplements, not lazykeops's own release number.
PYKEOPS_API_VERSION = "2.3"

_PROBE = ("SqNorm2(x - y)", ["x = Vi(3)", "y = Vj(3)"], [63.0, 90.0])


def set_verbose(val):
    """Show (True) or hide (False) lazykeops's 'compiling ...' messages."""
    os.environ["LAZYKEOPS_VERBOSE"] = "1" if val else "0"


def verbose():
    """The current verbosity, as pykeops's module attribute `pykeops.verbose`."""
    from ..compile.build import verbose as _verbose

    return _verbose()


def clean_pykeops(recompile_jit_binaries=True):
    """Remove every compiled kernel (lazykeops has no JIT binaries to rebuild)."""
    from .. import clean_cache

    clean_cache()


def get_build_folder():
    """The directory where compiled kernels are kept, as a string (pykeops returns one)."""
    from ..compile.cache import cache_dir

    return str(cache_dir())


def set_build_folder(path=None):
    """Keep compiled kernels in `path` from now on (`~` expanded); None: the default."""
    if path is None:
        os.environ.pop("LAZYKEOPS_CACHE_DIR", None)
    else:
        os.environ["LAZYKEOPS_CACHE_DIR"] = os.path.abspath(os.path.expanduser(str(path)))
    # Kernels already loaded stay valid: their cache keys do not depend on the folder.


def _probe_works(framework):
    if framework == "torch":
        import torch

        from ..torch import Genred

        x = torch.arange(1, 10, dtype=torch.float32).view(-1, 3)
        y = torch.arange(3, 9, dtype=torch.float32).view(-1, 3)
        out = Genred(_PROBE[0], _PROBE[1])(x, y).view(-1)
        return bool(torch.allclose(out, torch.tensor(_PROBE[2])))
    import numpy as np

    from ..numpy import Genred

    x = np.arange(1, 10, dtype=np.float32).reshape(-1, 3)
    y = np.arange(3, 9, dtype=np.float32).reshape(-1, 3)
    out = Genred(_PROBE[0], _PROBE[1])(x, y).reshape(-1)
    return bool(np.allclose(out, np.array(_PROBE[2], dtype=np.float32)))


def _report(framework):
    ok = _probe_works(framework)
    print(f"[lazykeops as pyKeOps] {framework} bindings are working!" if ok
          else f"[lazykeops as pyKeOps] {framework} bindings: outputs wrong values...")
    return ok


def test_torch_bindings():
    """Compile and check one formula through the torch front end; True if it works."""
    return _report("torch")


def test_numpy_bindings():
    """Compile and check one formula through the numpy front end; True if it works."""
    return _report("numpy")


def check_health():
    """Run lazykeops's self-check (`python -m lazykeops`); True if every check passed."""
    from ..__main__ import main

    return main() == 0


@lru_cache(maxsize=None)
def gpu_available():
    """True where lazykeops can run CUDA kernels: torch sees a GPU and a CUDA compiler
    (NVRTC or nvcc: compile/nvrtc.py's compiler()) is found."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    from ..compile.nvrtc import compiler

    return bool(torch.cuda.is_available()) and compiler() is not None


def show_cuda_status():
    """Print what lazykeops's CUDA path finds: torch's CUDA, the GPUs, the CUDA compiler."""
    from ..compile.nvrtc import compiler

    if importlib.util.find_spec("torch") is None:
        print("[lazykeops as pyKeOps] torch is not installed: CPU only (numpy)")
        return
    import torch

    gpus = [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    print(f"[lazykeops as pyKeOps] torch {torch.__version__}, CUDA "
          f"{torch.version.cuda or 'absent'}; GPUs: {', '.join(gpus) or 'none'}; CUDA "
          f"compiler: {compiler() or 'none found'}; CUDA kernels "
          f"{'available' if gpus and compiler() else 'unavailable: CPU only'}")


def found(module):
    return importlib.util.find_spec(module) is not None


__all__ = ["set_verbose", "clean_pykeops", "get_build_folder", "set_build_folder",
           "test_torch_bindings", "test_numpy_bindings", "check_health", "show_cuda_status",
           "PYKEOPS_API_VERSION", "LAZYKEOPS_VERSION"]
