"""Cache entries that must not be trusted, and caches that cannot be used: an entry copied
from another formula, a truncated library whose manifest was updated to match (both are
removed and rebuilt, in a child process so that a crash would show), a cache path that is
a file, and a cache that cannot be written."""

import hashlib
import json
import shutil
import struct
import uuid
from pathlib import Path

import pytest

from lazykeops import LazyKeOpsError
from lazykeops.compile import build
from lazykeops.compile.cache import elf_is_whole
from tests.compile.test_cache import kernel_entries, run_children, unique_constant
from tests.compile.test_build_side_effects import tiny_source


def _entries(cache):
    return set(kernel_entries(cache))


def _library(entry):
    return entry / json.loads((entry / "manifest.json").read_text())["library"]


def test_entry_of_another_formula_is_refused_and_rebuilt(tmp_path):
    mine, other = unique_constant(), unique_constant() + 1
    run_children(tmp_path, 1, mine)
    (entry,) = _entries(tmp_path)
    run_children(tmp_path, 1, other)
    (entry_of_other,) = _entries(tmp_path) - {entry}
    shutil.rmtree(entry)
    shutil.copytree(entry_of_other, entry)  # valid and self-consistent, but not mine
    assert run_children(tmp_path, 1, mine)[0] == {"ok": True, "builds": 1}
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["key"] == entry.name


def test_truncated_library_with_matching_manifest_is_rebuilt_without_crashing(tmp_path):
    constant = unique_constant()
    run_children(tmp_path, 1, constant)
    (entry,) = _entries(tmp_path)
    lib = _library(entry)
    whole = lib.read_bytes()
    assert whole[4] == 2 and whole[5] == 1  # ELF64, little-endian
    section_headers = struct.unpack_from("<Q", whole, 0x28)[0]  # e_shoff of an ELF64 file
    # Half the file (segments cut: dlopen would crash), then everything but the section
    # header table at its end; the manifest's sha256 is updated each time to match.
    for cut in (len(whole) // 2, section_headers):
        lib = _library(entry)
        lib.write_bytes(lib.read_bytes()[:cut])
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["sha256"] = hashlib.sha256(lib.read_bytes()).hexdigest()
        (entry / "manifest.json").write_text(json.dumps(manifest))
        assert run_children(tmp_path, 1, constant)[0] == {"ok": True, "builds": 1}
        assert _library(entry).stat().st_size == len(whole)


def test_every_prefix_of_a_library_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path))
    data = build.load_kernel(tiny_source(), "tiny kernel").path.read_bytes()
    assert elf_is_whole(data)
    step = max(1, len(data) // 500)
    assert not any(elf_is_whole(data[:cut]) for cut in [*range(0, len(data), step),
                                                        len(data) - 1])
    assert not elf_is_whole(b"\x7fELF" + data[4:5] + b"\x03" + data[6:])  # bad byte order


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_cache_path_that_is_not_a_directory_is_reported(tmp_path, monkeypatch, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    path = blocker if where == "file" else blocker / "cache"
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(path))
    with pytest.raises(LazyKeOpsError) as info:
        build.load_kernel(tiny_source(), "tiny kernel")
    assert "LAZYKEOPS_CACHE_DIR" in str(info.value) and str(path) in str(info.value)


# sysfs refuses new files, even to root: a real unwritable directory, where chmod is not.
@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs at /sys")
def test_unwritable_cache_with_a_new_kernel_is_reported(monkeypatch):
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", "/sys")
    with pytest.raises(LazyKeOpsError) as info:
        build.load_kernel(tiny_source(), f"tiny kernel {uuid.uuid4()}")
    msg = str(info.value)
    assert "/sys" in msg and "must be writable" in msg and "LAZYKEOPS_CACHE_DIR" in msg
