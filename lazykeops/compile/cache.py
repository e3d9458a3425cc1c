"""The kernel cache on disk: where it lives, what an entry holds, which entries are trusted,
and the housekeeping that keeps it from growing with debris.

One directory, from `LAZYKEOPS_CACHE_DIR` or else `~/.cache/lazykeops` (`XDG_CACHE_HOME`
respected), holds:

- `<key>/`: one published kernel: its source, its library and `manifest.json` (library
  name and sha256, the key and the named key entries it was built for, a description);
- `<key>.lock`: the file lock a builder of `<key>` holds for the whole build;
- `.build-<key>-<random>/`: a build in progress, published by renaming it to `<key>/`;
  one whose key lock is free belongs to a dead builder and is removed by the next build;
- `failed/<key12>-<random>.<ext>`: sources the compiler rejected, the newest few kept.

An entry is trusted only if its manifest names the expected key and key entries (so an
entry copied from another formula is refused), its library has the manifest's sha256, and
the library is a whole ELF file (so a truncated one is refused before dlopen can crash on
it). Anything else is damaged: the caller removes it and rebuilds.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import LazyKeOpsError

FAILED_KEPT = 20  # compile failures whose sources stay in <cache>/failed
_BUILD_DIR = re.compile(r"\.build-([0-9a-f]{32})-")


def cache_dir() -> Path:
    """The kernel cache directory (created on first use, not at import)."""
    env = os.environ.get("LAZYKEOPS_CACHE_DIR")
    if env:
        root = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(base) / "lazykeops"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise LazyKeOpsError(f"the kernel cache {root} is not a directory (it or a parent is a "
                             f"file): set LAZYKEOPS_CACHE_DIR to a directory") from None
    except OSError as err:
        raise unwritable(root, err) from None
    return root


def unwritable(root, err):
    """The error for a cache directory lazykeops cannot write to (read-only, no permission)."""
    return LazyKeOpsError(f"the kernel cache {root} must be writable to build a new kernel "
                          f"({err.strerror or err}): make it writable or set "
                          f"LAZYKEOPS_CACHE_DIR to a writable directory")


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


def _open_lock(path):
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def key_lock(root, key):
    """Hold the exclusive lock of `key` (blocking): only its holder builds or replaces
    `<root>/<key>/`."""
    try:
        fd = _open_lock(root / f"{key}.lock")
    except OSError as err:
        raise unwritable(root, err) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def new_build_dir(root, key):
    """A private build folder for `key`, whose lock the caller holds; first removes the build
    folders of dead builders (their key lock is free, or is this caller's)."""
    for folder in root.glob(".build-*"):
        match = _BUILD_DIR.match(folder.name)
        if match is None:
            continue
        if match.group(1) == key:  # we hold this lock: the folder predates us
            shutil.rmtree(folder, ignore_errors=True)
            continue
        fd = _open_lock(root / f"{match.group(1)}.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the builder is dead, and no new one can start while we hold its lock
            shutil.rmtree(folder, ignore_errors=True)
        except BlockingIOError:
            pass  # a live builder holds the lock: the folder is in use
        finally:
            os.close(fd)
    return Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))


def discard(path):
    """Remove a damaged entry, whatever it is (folder, file, dangling link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_manifest(folder, library, key, entries, description, interface=None):
    """`interface`: what the library's callers need to know about it (its launch ABI
    version, argument table and output widths), recorded for people and tools."""
    manifest = {"library": library.name, "sha256": _sha256(library.read_bytes()),
                "key": key, "key_entries": dict(entries), "description": description,
                "interface": interface}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def trusted_library(entry, key, entries):
    """The library of the published entry `entry` if it is intact and was built for `key`
    with these key entries (source sha256, headers, flags, ...); None if absent or damaged."""
    try:
        info = json.loads((entry / "manifest.json").read_text())
        if info["key"] != key or info["key_entries"] != dict(entries):
            return None  # another kernel's entry: its results would be wrong
        name = info["library"]
        if not isinstance(name, str) or Path(name).name != name:
            return None
        library = entry / name
        data = library.read_bytes()
        if _sha256(data) != info["sha256"] or not elf_is_whole(data):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return library


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


# ELF layouts by class (1: 32-bit, 2: 64-bit): the header fields after e_ident (e_type,
# e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum,
# e_shentsize, e_shnum, e_shstrndx); a program header's (offset, filesz) and a section
# header's (type, offset, size), each with the struct that reads them from the entry start.
_ELF = {1: ("HHIIIIIHHHHHH", "4xI8xI", "4xI8xII"),
        2: ("HHIQQQIHHHHHH", "8xQ16xQ", "4xI16xQQ")}
_ET_EXEC, _ET_DYN, _SHT_NOBITS = 2, 3, 8
_EM_CUDA = 190  # a cubin's e_machine


def elf_is_whole(data):
    """Whether `data` is a whole ELF shared library, or a whole CUDA cubin (an executable
    ELF file for a GPU, compile/nvrtc.py): its header, program headers, section header
    table and the file contents they point to all lie within `data`. dlopen of a truncated
    library can crash the process (SIGBUS), so it is checked first (and the driver is given
    no truncated cubin either)."""
    if len(data) < 16 or data[:4] != b"\x7fELF" or data[4] not in _ELF or data[5] not in (1, 2):
        return False
    header, segment, section = (struct.Struct(("<" if data[5] == 1 else ">") + layout)
                                for layout in _ELF[data[4]])
    if len(data) < 16 + header.size:
        return False
    (e_type, e_machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum,
     _) = header.unpack_from(data, 16)
    if not (e_type == _ET_DYN or (e_type == _ET_EXEC and e_machine == _EM_CUDA)):
        return False
    if phnum == 0 or phentsize < segment.size:
        return False
    if phoff + phnum * phentsize > len(data):
        return False
    for i in range(phnum):
        offset, filesz = segment.unpack_from(data, phoff + i * phentsize)
        if offset + filesz > len(data):
            return False
    if shoff == 0:  # no section headers: allowed, dlopen does not need them
        return True
    if shentsize < section.size or shoff + shentsize > len(data):
        return False
    if shnum == 0:  # more than 0xff00 sections: the count is section 0's sh_size
        shnum = section.unpack_from(data, shoff)[2]
    if shoff + shnum * shentsize > len(data):
        return False
    for i in range(1, shnum):  # section 0 is the null section
        sh_type, offset, size = section.unpack_from(data, shoff + i * shentsize)
        if sh_type != _SHT_NOBITS and offset + size > len(data):
            return False
    return True


def keep_failed_source(root, key, source_file):
    """Copy a source the compiler rejected to `<root>/failed/` for the user to inspect, and
    prune that folder to the newest FAILED_KEPT sources; returns the kept copy's path."""
    failed = root / "failed"
    failed.mkdir(exist_ok=True)
    fd, kept = tempfile.mkstemp(prefix=f"{key[:12]}-", suffix=source_file.suffix, dir=failed)
    with os.fdopen(fd, "wb") as out:
        out.write(source_file.read_bytes())
    by_age = []
    for path in failed.iterdir():
        try:
            by_age.append((path.stat().st_mtime, path))
        except FileNotFoundError:  # pruned meanwhile by another process
            continue
    by_age.sort(reverse=True)
    for _, path in by_age[FAILED_KEPT:]:
        if path != Path(kept):
            path.unlink(missing_ok=True)
    return Path(kept)
