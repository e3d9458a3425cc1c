"""Precompiled engine preludes for CPU kernels: the part of every generated CPU source that
does not depend on the formula, parsed once per machine instead of once per kernel.

A generated CPU source (codegen.render_source) starts with its prelude: the #defines Python
and the engine share, `#include "lk_launch.h"`, `#define LK_BLOCK_SPARSE 0|1` and
`#include "lk_cpu_engine.h"` (with the standard headers behind it). Parsing those is about
a third of a kernel's compile time (0.50 s -> 0.37 s for a block-sparse LogSumExp, 0.42 s
-> 0.30 s for a dense Sum, on the 2-core CPU machine). `prelude_header` writes the prelude
to `<cache>/precompiled/<key>/prelude.h` beside its GCC precompiled header prelude.h.gch
(built with the kernels' own flags; tens of MB, one per prelude: dense and block-sparse),
and the kernel build passes `-include <that prelude.h>`: the compiler reads the .gch
instead, and the source's own copy of the prelude then changes nothing (the same macros
defined again identically, headers under #pragma once). Should the .gch not be usable, GCC
silently reads prelude.h itself: the same text, the same code.

Cache rules as for kernels (cache.py): the key hashes the prelude, the engine headers, the
compiler and the flags; built under the key's lock in a private folder, published by one
rename; a manifest holds the key and the .gch's sha256, checked once per process before
use. A damaged entry is removed and rebuilt; a prelude the compiler cannot precompile (a
compiler without PCH support) is simply not used. Each use sets the entry's folder mtime,
as kernel loads do, so that `python -m lazykeops cache --prune-older-than` removes the
preludes of old engine headers or compilers (cache_admin.py); a kernel build whose prelude
vanishes under it compiles again without one (build.py).
"""

import hashlib
import json
import os
import shutil
import subprocess
from functools import lru_cache

from .cache import cache_dir, discard, key_lock, new_build_dir

ENGINE_INCLUDE = '#include "lk_cpu_engine.h"'
FOLDER = "precompiled"  # in the cache, beside the kernels' entries
_UNUSABLE = set()  # keys whose prelude the compiler refused, in this process: not retried


def split_prelude(source):
    """The prelude of a generated CPU source: its preprocessor lines up to the engine's
    include (comments before them name the formula: left out, as each kernel's differ);
    None for a source without it."""
    lines = []
    for line in source.splitlines():
        if line.startswith("#"):
            lines.append(line)
            if line == ENGINE_INCLUDE:
                return "\n".join(lines) + "\n"
        elif line.strip() and not line.startswith("//"):
            return None  # code before the engine's include: not a prelude we know
    return None


def prelude_header(prelude, compile_cmd, key_parts):
    """The path of a prelude.h whose precompiled header is built and trusted, or None
    (no PCH: the kernel compiles without one). `compile_cmd`: the compiler and flags a
    kernel is compiled with (without sources or outputs); `key_parts`: what else the .gch
    depends on (the engine headers' digest, the compiler's version)."""
    h = hashlib.sha256()
    for part in (prelude, *compile_cmd, *key_parts):
        h.update(part.encode() + b"\0")
    key = h.hexdigest()[:32]
    root = cache_dir() / FOLDER
    try:
        root.mkdir(exist_ok=True)
    except OSError:
        return None  # the kernel's build reports an unwritable cache
    entry = root / key
    if _trusted(entry, key):
        return _used(entry)
    if key in _UNUSABLE:
        return None
    with key_lock(root, key):
        if _trusted(entry, key):
            return _used(entry)
        discard(entry)
        tmp = new_build_dir(root, key)
        try:
            if not _build(tmp, key, prelude, compile_cmd):
                _UNUSABLE.add(key)
                return None
            os.rename(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry / "prelude.h" if _trusted(entry, key) else None


def _used(entry):
    """The entry's prelude.h, its use recorded in the folder's mtime (the pruner's clock)."""
    try:
        os.utime(entry)
    except OSError:
        pass  # a read-only cache still serves its preludes
    return entry / "prelude.h"


def _build(folder, key, prelude, compile_cmd):
    header = folder / "prelude.h"
    header.write_text(prelude)
    cmd = [*compile_cmd, "-x", "c++-header", str(header), "-o", str(folder / "prelude.h.gch")]
    try:
        done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False)
    except OSError:
        return False
    if done.returncode != 0:
        return False
    gch = (folder / "prelude.h.gch").read_bytes()
    manifest = {"kind": "precompiled prelude", "key": key, "gch_sha256": _sha256(gch)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return True


def _trusted(entry, key):
    try:
        stat = (entry / "prelude.h.gch").stat()
    except OSError:
        return False
    return _checked(str(entry), key, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=None)
def _checked(entry, key, size, mtime_ns):
    """Whether the entry's manifest names `key` and its .gch has the manifest's sha256
    (once per process and file version: the .gch is tens of MB)."""
    try:
        with open(os.path.join(entry, "manifest.json")) as f:
            info = json.load(f)
        with open(os.path.join(entry, "prelude.h.gch"), "rb") as f:
            digest = _sha256(f.read())
        return info.get("key") == key and info.get("gch_sha256") == digest and \
            os.path.isfile(os.path.join(entry, "prelude.h"))
    except (OSError, ValueError, AttributeError):
        return False


def _sha256(data):
    return hashlib.sha256(data).hexdigest()
