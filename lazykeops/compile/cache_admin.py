"""Housekeeping of the kernel cache for people (`python -m lazykeops cache`): what it holds,
and removing what has not been used for a while.

This module owns the listing (kernel entries, precompiled preludes, failed sources, builds
in progress or abandoned: counts, sizes, dates) and the pruning by age; the layout, the
locks and `clean_cache` (--clear) belong to cache.py, the preludes to pch.py.

"Used" means loaded: build.py sets an entry's folder mtime each time a process loads it
(or builds it), so the mtime is the last use. Pruning removes `<key>/` entries whose mtime
is older than the cut-off, each under its key lock (cache.key_lock, the lock a builder
holds for the whole build), so that an entry being built or replaced is never removed:
the pruner waits for the builder, then looks at the mtime again (a fresh build is recent,
so kept). A process loading an entry takes no lock; should the entry be removed between
its checks and its dlopen, the load fails and that process rebuilds the kernel.
The precompiled preludes are pruned the same way, by the mtime pch.py sets at each use,
under their own key locks (a build that finds its prelude gone compiles without one).
Left alone by pruning: failed sources (cache.py keeps the newest few), build folders
(the next build removes the dead ones) and the `<key>.lock` files (removing a lock file
another process has open would let two builders hold "the" lock at once).
"""

import os
import re
import shutil
import time
from collections import namedtuple
from pathlib import Path

from .cache import clean_cache, key_lock
from .pch import FOLDER as PRECOMPILED

_KEY = re.compile(r"[0-9a-f]{32}")
DAY = 86400.0

Entry = namedtuple("Entry", "path size mtime")


def folder_size(path):
    """Bytes of the files under `path` (links not followed); 0 if it vanished meanwhile."""
    total = 0
    try:
        with os.scandir(path) as it:
            for item in it:
                try:
                    if item.is_dir(follow_symlinks=False):
                        total += folder_size(item.path)
                    else:
                        total += item.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # removed by another process meanwhile
                    continue
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return total


def _entries(folder, keep):
    """Entry(path, size, mtime) for each item of `folder` that `keep(path)` accepts."""
    found = []
    try:
        items = sorted(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return found
    for path in items:
        if not keep(path):
            continue
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            continue
        size = folder_size(path) if path.is_dir() else path.stat().st_size
        found.append(Entry(path, size, mtime))
    return found


def _is_entry(path):
    return _KEY.fullmatch(path.name) is not None and path.is_dir() and not path.is_symlink()


def kernel_entries(root):
    """The published kernels `<root>/<key>/`."""
    return _entries(root, _is_entry)


def precompiled_preludes(root):
    """The precompiled engine preludes `<root>/precompiled/<key>/`."""
    return _entries(Path(root) / PRECOMPILED, _is_entry)


def failed_sources(root):
    return _entries(Path(root) / "failed", lambda p: p.is_file())


def build_folders(root):
    """Builds in progress, or left by killed builders (removed by the next build)."""
    return _entries(root, lambda p: p.name.startswith(".build-") and p.is_dir())


def prelude_kind(entry):
    """'dense' or 'block-sparse': the engine a precompiled prelude serves."""
    try:
        text = (entry / "prelude.h").read_text()
    except OSError:
        return "unreadable"
    return "block-sparse" if "#define LK_BLOCK_SPARSE 1" in text else "dense"


def human_size(nbytes):
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000


def _date(mtime):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


def describe(root):
    """The listing printed by `python -m lazykeops cache`."""
    kernels, preludes = kernel_entries(root), precompiled_preludes(root)
    failed, builds = failed_sources(root), build_folders(root)
    lines = [f"lazykeops kernel cache: {root}"]
    size = sum(e.size for e in kernels)
    line = f"  kernels              : {len(kernels)} entries, {human_size(size)}"
    if kernels:
        times = [e.mtime for e in kernels]
        line += f", last used {_date(min(times))} (oldest) to {_date(max(times))} (newest)"
    lines.append(line)
    lines.append(f"  precompiled preludes : {len(preludes)}, "
                 f"{human_size(sum(e.size for e in preludes))} ({PRECOMPILED}/)")
    lines += [f"    {e.path.name}  {prelude_kind(e.path):12s} {human_size(e.size)}"
              for e in preludes]
    lines.append(f"  failed sources       : {len(failed)}, "
                 f"{human_size(sum(e.size for e in failed))} (failed/)")
    lines += [f"    {e.path.name}  {_date(e.mtime)}" for e in failed]
    if builds:
        lines.append(f"  build folders        : {len(builds)} (in progress, or left by a "
                     "killed build: the next build removes those)")
    lines.append(f"  total                : {human_size(folder_size(root))}")
    return "\n".join(lines)


def prune(root, days, now=None):
    """Remove the kernel entries not used for `days` days; returns (removed, bytes freed,
    kept), and the same for the precompiled preludes. Each entry is looked at again under
    its key lock: one a builder just published or a process just used is recent, so
    kept."""
    cutoff = (time.time() if now is None else now) - days * DAY
    return (_prune(Path(root), kernel_entries(root), cutoff),
            _prune(Path(root) / PRECOMPILED, precompiled_preludes(root), cutoff))


def _prune(folder, entries, cutoff):
    removed = freed = kept = 0
    for entry in entries:
        if entry.mtime >= cutoff:
            kept += 1
            continue
        with key_lock(folder, entry.path.name):  # waits for a builder of this key
            try:
                if entry.path.stat().st_mtime >= cutoff:  # rebuilt or loaded meanwhile
                    kept += 1
                    continue
                size = folder_size(entry.path)
                shutil.rmtree(entry.path)  # raises on failure; half an entry is untrusted
            except FileNotFoundError:  # removed meanwhile (another pruner, a clean)
                continue
        removed += 1
        freed += size
    return removed, freed, kept


def clear(root):
    """Remove everything in the cache (cache.clean_cache); returns (entries, bytes)."""
    entries, size = len(kernel_entries(root)), folder_size(root)
    clean_cache()
    return entries, size
