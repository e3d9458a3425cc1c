"""lazykeops: kernel operations on CPUs and GPUs, with autodiff, without memory overflows.

Nothing happens at import time: no compilation, no CUDA probing. Entry points:
`lazykeops.torch` and `lazykeops.numpy` (Genred, generic_sum, generic_logsumexp, ...).
"""

__version__ = "0.1.0"

from .errors import CompileError, LazyKeOpsError  # noqa: E402,F401


def install_as_pykeops():
    """Make `import pykeops` (and pykeops.torch, pykeops.numpy, pykeops.config, ...) give
    lazykeops, so that libraries built on pykeops run on it unchanged; returns the module.
    Call it before anything imports the real pykeops (it refuses otherwise); calling it
    again is harmless. See docs/pykeops.md."""
    from .compat.pykeops_modules import install

    return install()


def clean_cache():
    """Remove every compiled kernel from the cache directory."""
    from .compile.cache import clean_cache as _clean

    _clean()


def float32_precision(precision):
    """A context manager: within it, float32 reductions on the GPU use tensor cores as
    torch.set_float32_matmul_precision(precision) would allow ("highest": full float32 on
    CUDA cores; "high" or "medium": TF32), overriding torch's setting for those calls
    only. See docs/gpu.md, "Tensor cores"."""
    from .compile.tensor_cores import float32_precision as _precision

    return _precision(precision)
