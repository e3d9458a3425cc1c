"""Where compiled kernels live on disk, and how to clear them.

One directory, from `LAZYKEOPS_CACHE_DIR` or else `~/.cache/lazykeops` (`XDG_CACHE_HOME`
respected), holds one sub-directory per kernel, named by its content hash.
"""

import os
import shutil
from pathlib import Path


def cache_dir() -> Path:
    """The kernel cache directory (created on first use, not at import)."""
    env = os.environ.get("LAZYKEOPS_CACHE_DIR")
    if env:
        root = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(base) / "lazykeops"
    root.mkdir(parents=True, exist_ok=True)
    return root


def clean_cache():
    """Remove every compiled kernel; they are rebuilt on demand."""
    from .build import forget_loaded

    root = cache_dir()
    for entry in root.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    forget_loaded()
