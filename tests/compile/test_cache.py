"""The on-disk kernel cache: deterministic keys, one build under a 4-process race,
recovery from a damaged library, clean_cache, and compiler errors reported cleanly (their
sources kept in the cache, the newest few). test_cache_trust.py covers entries that must
not be trusted; test_build_side_effects.py what a build must not leave behind."""

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from lazykeops import CompileError
from lazykeops.compile import build
from lazykeops.compile.cache import FAILED_KEPT
from lazykeops.compile.codegen import render_source
from lazykeops.compile.spec import KernelSpec
from lazykeops.formula import make, var

def kernel_entries(cache):
    """The kernels' entries of a cache (not its precompiled preludes, compile/pch.py)."""
    return [p for p in cache.iterdir() if p.is_dir() and p.name != "precompiled"]


# A child process: computes sum_j (x_i * y_j + c) for a formula unique to this test run,
# prints whether it built the kernel and whether its result matches numpy.
CHILD = textwrap.dedent("""
    import sys, json
    import numpy as np
    from lazykeops.numpy import Genred
    from lazykeops.compile import build
    c = float(sys.argv[1])
    x = np.arange(50, dtype=np.float64)[:, None]
    y = np.linspace(0, 1, 70)[:, None]
    out = Genred(f"X * Y + {c!r}", ["X = Vi(1)", "Y = Vj(1)"], axis=1)(x, y)
    ok = bool(np.allclose(out[:, 0], (x * y.T + c).sum(1)))
    print(json.dumps({"ok": ok, "builds": build.stats["builds"]}))
""")


def run_children(cache, count, constant):
    env = dict(os.environ, LAZYKEOPS_CACHE_DIR=str(cache), LAZYKEOPS_VERBOSE="0")
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, repr(constant)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(count)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def unique_constant():
    return float(uuid.uuid4().int % 10_000) + 0.25


def test_four_processes_build_a_new_kernel_once(tmp_path):
    results = run_children(tmp_path, 4, unique_constant())
    assert all(r["ok"] for r in results)
    assert sum(r["builds"] for r in results) == 1
    entries = kernel_entries(tmp_path)
    assert len(entries) == 1 and (entries[0] / "manifest.json").exists()


def test_damaged_library_is_detected_and_rebuilt(tmp_path):
    constant = unique_constant()
    assert run_children(tmp_path, 1, constant)[0]["builds"] == 1
    (entry,) = kernel_entries(tmp_path)
    lib = entry / json.loads((entry / "manifest.json").read_text())["library"]
    lib.write_bytes(lib.read_bytes()[: lib.stat().st_size // 3])  # truncated
    again = run_children(tmp_path, 1, constant)[0]
    assert again == {"ok": True, "builds": 1}
    # ... and once rebuilt, it is loaded from the cache again.
    assert run_children(tmp_path, 1, constant)[0] == {"ok": True, "builds": 0}


def test_missing_manifest_is_rebuilt(tmp_path):
    constant = unique_constant()
    run_children(tmp_path, 1, constant)
    (entry,) = kernel_entries(tmp_path)
    (entry / "manifest.json").write_text("{not json")
    assert run_children(tmp_path, 1, constant)[0] == {"ok": True, "builds": 1}


def test_source_is_deterministic_and_key_changes_with_it():
    f = make("Exp", make("Minus", make("SqDist", var(0, 3, 0), var(1, 3, 1))))
    spec = KernelSpec((f,), ((0, 3), (1, 3)), "Sum", None, "float32")
    src = render_source(spec)
    assert src == render_source(KernelSpec((f,), ((0, 3), (1, 3)), "Sum", None, "float32"))
    other = render_source(KernelSpec((f,), ((0, 3), (1, 3)), "Sum", None, "float64"))
    assert build.cache_key(src) == build.cache_key(src)
    assert build.cache_key(src) != build.cache_key(other)
    names = [name for name, _ in build.key_entries(src)]
    assert {"source", "headers", "lazykeops", "compiler", "cflags", "torch"} <= set(names)


def test_clean_cache_empties_the_directory(tmp_path, monkeypatch):
    import lazykeops

    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path))
    (tmp_path / "deadbeef").mkdir()
    (tmp_path / "deadbeef.lock").write_text("")
    lazykeops.clean_cache()
    assert list(tmp_path.iterdir()) == []


def test_compiler_error_names_the_source_kept_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path))
    source = f"this is not C++; // {uuid.uuid4()}\n"
    with pytest.raises(CompileError) as info:
        build.load_kernel(source, "broken kernel")
    msg = str(info.value)
    assert "kernel.cpp" in msg and "error" in msg
    kept = Path(msg.split("source kept at ")[1].split(";")[0])
    assert kept.read_text() == source
    # kept inside the cache, named by its key; nothing half-built left, nothing in /tmp
    assert kept.parent == tmp_path / "failed"
    assert kept.name.startswith(build.cache_key(source)[:12])
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["failed"]


def test_failed_sources_are_pruned_to_the_newest(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path))
    failed = tmp_path / "failed"
    failed.mkdir()
    old = [failed / f"{n:012d}-old.cpp" for n in range(FAILED_KEPT + 5)]
    for age, path in enumerate(old):  # old[0] is the oldest
        path.write_text("old")
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    with pytest.raises(CompileError) as info:
        build.load_kernel(f"not C++ either; // {uuid.uuid4()}\n", "broken kernel")
    kept = Path(str(info.value).split("source kept at ")[1].split(";")[0])
    assert sorted(failed.iterdir()) == sorted([kept, *old[-(FAILED_KEPT - 1):]])
