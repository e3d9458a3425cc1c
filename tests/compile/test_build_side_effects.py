"""What a build must not leave behind or change: build folders of killed builders are
removed by the next build (but not those of live ones), the process environment is left
alone by a CUDA build, torch does not load the library, the test session removes the cache
it created; and which compiler diagnostics fail a build (overflow) or do not (warnings)."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from lazykeops import CompileError
from lazykeops.compile import build
from lazykeops.runtime.abi import source_prelude

REPO = Path(__file__).resolve().parents[2]


def tiny_source(result=0, extra=""):
    """A minimal kernel library whose lk_launch returns `result`; unique, so it is built."""
    return (f"// {uuid.uuid4()}\n{source_prelude()}\n{extra}\nLK_ABI_EXPORTS\n"
            'extern "C" __attribute__((visibility("default"))) int lk_launch(LkLaunch*) '
            f"{{ return {result}; }}\n")


def run(lib):
    return lib.launch(None)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path))
    return tmp_path


HOLD_LOCK = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(600)
""")


def test_build_removes_build_folders_of_dead_builders_only(cache):
    source = tiny_source()
    mine, dead, live = build.cache_key(source), uuid.uuid4().hex, uuid.uuid4().hex
    for key in (mine, dead, live):
        (cache / f".build-{key}-left").mkdir()
        (cache / f".build-{key}-left" / "kernel.cpp").write_text("half-built")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cache / f"{live}.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run(build.load_kernel(source, "tiny kernel")) == 0
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in cache.glob(".build-*")] == [f".build-{live}-left"]


BUILD_FOREVER = textwrap.dedent("""
    import numpy as np
    from lazykeops.numpy import Genred
    x = np.ones((5, 1))
    Genred("X * Y + {c!r}", ["X = Vi(1)", "Y = Vj(1)"], axis=1)(x, x)
""")


@pytest.mark.slow
def test_build_folder_of_a_killed_build_is_removed_by_the_next_build(cache):
    child = subprocess.Popen([sys.executable, "-c",
                              BUILD_FOREVER.format(c=float(uuid.uuid4().int % 10_000))],
                             env=dict(os.environ, LAZYKEOPS_VERBOSE="0"),
                             start_new_session=True)  # its own group: ninja and g++ die too
    deadline = time.monotonic() + 120
    while not list(cache.glob(".build-*")) and child.poll() is None:
        assert time.monotonic() < deadline, "the child never started building"
        time.sleep(0.005)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    # Killed mid-build: its folder stays (and the precompiled prelude's, if it was that)
    assert len(list(cache.glob(".build-*"))) >= 1
    build.load_kernel(tiny_source(), "tiny kernel")
    assert list(cache.glob(".build-*")) == []


def test_building_does_not_load_the_library_through_torch(cache):
    import torch

    before = list(torch.ops.loaded_libraries)
    lib = build.load_kernel(tiny_source(7), "tiny kernel")
    assert run(lib) == 7
    assert list(torch.ops.loaded_libraries) == before


# CUDA kernels go through torch's Ninja build (CPU kernels through one compiler call): its
# use of torch's private builder, and the fallback to cpp_extension.load, checked on a C++
# source so that no GPU is needed.
def ninja_build(folder, result):
    src = folder / "kernel.cpp"
    src.write_text(tiny_source(result))
    build._ninja_build("lk_tiny", src, folder, extra_cflags=[f"-I{build.CSRC}"],
                       extra_cuda_cflags=[], extra_ldflags=[], with_cuda=False)
    return build.KernelLibrary(folder / "lk_tiny.so", "tiny", "cpu")


def test_ninja_build_does_not_load_the_library_through_torch(tmp_path):
    import torch

    before = list(torch.ops.loaded_libraries)
    assert run(ninja_build(tmp_path, 4)) == 4
    assert list(torch.ops.loaded_libraries) == before


def test_ninja_build_falls_back_to_load_when_torch_private_builder_changes(tmp_path,
                                                                          monkeypatch):
    import torch
    from torch.utils import cpp_extension

    original = cpp_extension._write_ninja_file_and_build_library

    def unrecognised(*args, **kwargs):  # a signature build.py cannot check
        return original(*args, **kwargs)

    monkeypatch.setattr(cpp_extension, "_write_ninja_file_and_build_library", unrecognised)
    before = len(torch.ops.loaded_libraries)
    assert run(ninja_build(tmp_path, 5)) == 5
    assert len(torch.ops.loaded_libraries) == before + 1  # built, and loaded, by load()


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_cuda_build_passes_the_architecture_without_touching_the_environment(
        cache, monkeypatch):
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:  # a CPU build of torch: point it at the local CUDA
        home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
        if not os.path.exists(os.path.join(home, "bin", "nvcc")):
            pytest.skip("no CUDA installation found for torch's build")
        monkeypatch.setattr(cpp_extension, "CUDA_HOME", home)
    source = f'// {uuid.uuid4()}\nextern "C" __global__ void lk_nothing(float *out) {{ }}\n'
    key, folder = build.cache_key(source, "cuda:sm_90"), cache / "cuda-build"
    folder.mkdir()
    environment = dict(os.environ)
    try:
        build._build(folder, cache, key, build.key_entries(source, "cuda:sm_90"),
                     build._Build(source, "cuda kernel", "cuda:sm_90", None, None,
                                  build.KernelLibrary))
    except CompileError as err:
        # torch without CUDA cannot link (no libc10_cuda): compiling is what is checked
        assert "c10_cuda" in str(err) or "torch_cuda" in str(err), str(err)
    assert dict(os.environ) == environment
    assert (folder / "kernel.cuda.o").exists()  # nvcc compiled it ...
    ninja = (folder / "build.ninja").read_text()
    cuda_flags = next(line for line in ninja.splitlines() if line.startswith("cuda_cflags"))
    assert "-gencode=arch=compute_90,code=sm_90" in cuda_flags  # ... for sm_90 only
    assert cuda_flags.count("arch=") == 1


def test_overflow_in_generated_code_fails_the_build(cache):
    overflowing = "int lk_overflowing() { return 2147483647 + 1; }"
    with pytest.raises(CompileError, match="overflow"):
        build.load_kernel(tiny_source(extra=overflowing), "overflowing kernel")


def test_ordinary_warnings_do_not_fail_the_build(cache):
    warned = "#warning an ordinary warning"
    assert run(build.load_kernel(tiny_source(3, extra=warned), "warned kernel")) == 3


# A child pytest session with the repository's conftest and options (workers included),
# reporting the cache it ran with.
SESSION = textwrap.dedent("""
    import os, sys, pytest
    class Report:
        def pytest_sessionstart(self, session):
            with open(sys.argv[1], "w") as out:
                out.write(os.environ["LAZYKEOPS_CACHE_DIR"])
    test = "tests/compile/test_cache.py::test_source_is_deterministic_and_key_changes_with_it"
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", test], plugins=[Report()]))
""")


@pytest.mark.parametrize("given", [False, True])
def test_test_session_removes_only_the_cache_it_created(tmp_path, given):
    temp, given_cache, report = tmp_path / "tmp", tmp_path / "given", tmp_path / "report"
    temp.mkdir()
    given_cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LAZYKEOPS_CACHE_DIR"}
    env["TMPDIR"] = str(temp)
    if given:
        env["LAZYKEOPS_CACHE_DIR"] = str(given_cache)
    res = subprocess.run([sys.executable, "-c", SESSION, str(report)], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    used = Path(report.read_text())
    if given:
        assert used == given_cache and given_cache.is_dir()
    else:
        assert used.parent == temp and used.name.startswith("lazykeops-tests-")
        assert not used.exists()
    assert list(temp.glob("lazykeops-tests-*")) == []
