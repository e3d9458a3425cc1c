"""`python -m lazykeops warmup` and `python -m lazykeops cache` (compile/warmup.py,
compile/cache_admin.py), run as a user runs them: in a subprocess, on a cache of their own.

A restricted warm-up (the kernel_product Gaussian, D = 3, float32: its forward and its
gradient, 2 kernels) builds both, finds both the second time, and a user's call of that
spelling afterwards builds nothing; the listing counts and sizes what is there; pruning
removes the entries and precompiled preludes not used for DAYS, keeps the recent ones and
failed sources, and waits for a builder holding an entry's lock; a build after pruning
rebuilds the prelude, and a build marks the prelude it uses; loading an entry marks it
used; a failed build is reported (status 1) and listed; bad arguments exit with status 2 and a
message before anything touches the cache."""

import fcntl
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lazykeops import __main__ as cli_module
from lazykeops.compile.cache_admin import human_size

ROOT = Path(__file__).resolve().parents[2]
WARM = ["warmup", "--kinds", "gaussian", "--apis", "kernel_product", "--dims", "3",
        "--dtypes", "float32", "--jobs", "2"]
DAY = 86400
KEY = re.compile(r"[0-9a-f]{32}")

# A user's kernel_product call (other sizes and gamma than the warm-up's), forward and
# backward, at D = argv[1] on argv[2]; prints the process's builds and loads.
USER_CALL = textwrap.dedent("""
    import sys, torch
    from lazykeops.compile import build
    from lazykeops.torch import Kernel, kernel_product
    D, device = int(sys.argv[1]), sys.argv[2]
    x = torch.randn(300, D, device=device, requires_grad=True)
    y, b = torch.randn(200, D, device=device), torch.randn(200, 1, device=device)
    params = {"id": Kernel("gaussian(x,y)"), "gamma": torch.tensor([0.3], device=device)}
    kernel_product(params, x, y, b).sum().backward()
    print(build.stats["builds"], build.stats["loads"])
""")


def run(cache, *args, timeout=300, **more_env):
    env = {**os.environ, "LAZYKEOPS_CACHE_DIR": str(cache), "LAZYKEOPS_VERBOSE": "0",
           **more_env}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def lazykeops(cache, *args, **kw):
    return run(cache, "-m", "lazykeops", *args, **kw)


def user_call(cache, dim=3, device="cpu"):
    """(builds, loads) of USER_CALL in a fresh process."""
    done = run(cache, "-c", USER_CALL, str(dim), device)
    assert done.returncode == 0, done.stderr
    return tuple(int(n) for n in done.stdout.split())


def entries(cache):
    return sorted(p for p in cache.iterdir() if KEY.fullmatch(p.name) and p.is_dir())


def size_of(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def summary_counts(stdout):
    match = re.search(r"(\d+) kernels, (\d+) built, (\d+) already cached, [\d.]+ s", stdout)
    assert match, stdout
    return tuple(int(n) for n in match.groups())


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A cache after the restricted warm-up, and that warm-up's result."""
    cache = tmp_path_factory.mktemp("warm") / "cache"
    done = lazykeops(cache, *WARM)
    assert done.returncode == 0, done.stderr
    return cache, done


@pytest.fixture
def copy(warm, tmp_path):
    """A copy of the warmed cache, for a test that changes it."""
    cache = tmp_path / "cache"
    shutil.copytree(warm[0], cache, symlinks=True)
    return cache


def test_warmup_builds_the_kernels_and_their_gradients(warm):
    cache, done = warm
    assert summary_counts(done.stdout) == (2, 2, 0)
    assert len(entries(cache)) == 2
    descriptions = sorted((e / "manifest.json").read_text().count("derivative of")
                          for e in entries(cache))
    assert descriptions == [0, 1]  # the forward Sum, and the backward's
    # not a terminal: a line per tenth, the last one complete
    lines = [line for line in done.stderr.splitlines() if line.startswith("[lazykeops]")]
    assert lines == ["[lazykeops] warm-up 1/2 kernels", "[lazykeops] warm-up 2/2 kernels"]
    assert "\r" not in done.stderr and "compiling" not in done.stderr


def test_a_second_warmup_finds_them_in_the_cache(copy):
    done = lazykeops(copy, *WARM)
    assert done.returncode == 0, done.stderr
    assert summary_counts(done.stdout) == (2, 0, 2)
    assert len(entries(copy)) == 2


def test_a_warmed_call_builds_nothing_and_marks_its_entries_used(copy):
    old = time.time() - 100 * DAY
    for entry in entries(copy):
        os.utime(entry, (old, old))
    assert user_call(copy, dim=3) == (0, 2)  # forward and gradient: loaded, none built
    for entry in entries(copy):
        assert entry.stat().st_mtime > time.time() - 600  # loading marked it used
    assert user_call(copy, dim=2) == (2, 2)  # not warmed: the counter does count builds


def test_the_listing(warm):
    cache, _ = warm
    done = lazykeops(cache, "cache")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    kernels = entries(cache)
    assert f"lazykeops kernel cache: {cache}" in out
    assert f"kernels              : 2 entries, {human_size(sum(map(size_of, kernels)))}" \
        in out
    assert re.search(r"last used \d{4}-\d\d-\d\d \d\d:\d\d \(oldest\) to "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d \(newest\)", out)
    preludes = [p for p in (cache / "precompiled").iterdir() if p.is_dir()]
    assert len(preludes) == 1
    assert f"precompiled preludes : 1, {human_size(size_of(preludes[0]))}" in out
    assert f"{preludes[0].name}  dense" in out
    assert "failed sources       : 0, 0 B" in out
    assert f"total                : {human_size(size_of(cache))}" in out


def test_prune_removes_old_entries_and_preludes_and_keeps_recent_ones(copy):
    old, recent = entries(copy)
    long_ago = time.time() - 40 * DAY
    os.utime(old, (long_ago, long_ago))
    (prelude,) = [p for p in (copy / "precompiled").iterdir() if p.is_dir()]
    os.utime(prelude, (long_ago, long_ago))
    (copy / "failed").mkdir()
    failed = copy / "failed" / "0123456789ab-x.cpp"
    failed.write_text("int broken(")
    os.utime(failed, (long_ago, long_ago))

    freed, prelude_size = human_size(size_of(old)), human_size(size_of(prelude))
    done = lazykeops(copy, "cache", "--prune-older-than", "30")
    assert done.returncode == 0, done.stderr
    assert f"removed 1 kernel entries not used for 30 days ({freed}); kept 1" in done.stdout
    assert (f"removed 1 precompiled preludes not used for 30 days ({prelude_size}); kept 0"
            in done.stdout)
    assert entries(copy) == [recent] and not prelude.exists() and failed.is_file()
    listing = lazykeops(copy, "cache").stdout
    assert "kernels              : 1 entries" in listing
    assert "failed sources       : 1" in listing


def test_a_build_rebuilds_a_pruned_prelude_and_marks_a_prelude_it_uses(copy):
    (prelude,) = [p for p in (copy / "precompiled").iterdir() if p.is_dir()]
    shutil.rmtree(prelude)
    assert user_call(copy, dim=2)[0] == 2  # forward and gradient, built after the prune
    assert (prelude / "prelude.h.gch").is_file()
    long_ago = time.time() - 40 * DAY
    os.utime(prelude, (long_ago, long_ago))
    assert user_call(copy, dim=4)[0] == 2
    assert prelude.stat().st_mtime > time.time() - DAY  # used, so kept by a prune


def _blocked_on(lock_file, timeout=120):
    """Wait until a process is blocked on the flock of `lock_file` (/proc/locks marks
    waiters with '->')."""
    inode = os.stat(lock_file).st_ino
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open("/proc/locks") as f:
            if any("->" in line and f":{inode} " in line for line in f):
                return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_prune_waits_for_the_builder_of_an_entry(tmp_path):
    """An old entry whose key lock a builder holds is not removed: the pruner waits, then
    sees the entry the builder published (recent) and keeps it."""
    cache = tmp_path / "cache"
    entry = cache / ("ab" * 16)
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text("{}")
    long_ago = time.time() - 40 * DAY
    os.utime(entry, (long_ago, long_ago))
    lock = cache / f"{entry.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a builder replacing the entry
    env = {**os.environ, "LAZYKEOPS_CACHE_DIR": str(cache)}
    pruner = subprocess.Popen([sys.executable, "-m", "lazykeops", "cache",
                               "--prune-older-than", "30"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _blocked_on(lock), "the pruner never waited for the key lock"
        assert entry.is_dir() and pruner.poll() is None
        os.utime(entry)  # the builder publishes the new entry ...
    finally:
        os.close(fd)  # ... and releases the lock
    out, err = pruner.communicate(timeout=120)
    assert pruner.returncode == 0, err
    assert "removed 0 kernel entries" in out and "kept 1" in out
    assert entry.is_dir()


def test_a_failed_build_is_reported_and_listed(tmp_path):
    cache = tmp_path / "cache"
    done = lazykeops(cache, *WARM, CXX="false")  # a compiler that rejects everything
    assert done.returncode == 1
    assert summary_counts(done.stdout) == (0, 0, 0)
    assert re.search(r"failed: gaussian D=3 float32, kernel_product spelling "
                     r"\(docs/kernels.md\): CompileError: compiling .* failed; source kept at "
                     + re.escape(str(cache / "failed")), done.stdout), done.stdout
    assert done.stderr.strip().endswith("[lazykeops] warm-up 2/2 kernels")
    listing = lazykeops(cache, "cache").stdout
    assert "kernels              : 0 entries, 0 B" in listing
    assert re.search(r"failed sources       : 1, .*\n    [0-9a-f]{12}-\w+\.cpp  ", listing)


def test_clear_removes_everything(copy):
    size = size_of(copy)
    done = lazykeops(copy, "cache", "--clear")
    assert done.returncode == 0, done.stderr
    assert f"removed everything in {copy}: 2 kernel entries, {human_size(size)}" in done.stdout
    assert list(copy.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["warmup", "--dims", "0"], "argument --dims: expected a positive integer, got '0'"),
    (["warmup", "--dims", "three"], "expected a positive integer, got 'three'"),
    (["warmup", "--kinds", "gauss"], "argument --kinds: invalid choice: 'gauss'"),
    (["warmup", "--apis", "keops"], "argument --apis: invalid choice: 'keops'"),
    (["warmup", "--jobs", "-2"], "argument --jobs: expected a positive integer"),
    (["warmup", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["warmup", "--dtypes", "float16"], "the CPU computes half precisions with its float32"),
    (["cache", "--prune-older-than", "-1"], "expected a number of days >= 0, got '-1'"),
    (["cache", "--prune-older-than", "nan"], "expected a number of days >= 0"),
    (["cache", "--prune-older-than", "3", "--clear"], "not allowed with argument"),
    (["cleanup"], "invalid choice: 'cleanup'"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, args, message):
    cache = tmp_path / "cache"
    done = lazykeops(cache, *args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and "usage: python -m lazykeops" in done.stderr
    assert not cache.exists()  # refused before anything touched the cache


def test_a_cache_that_is_a_file_is_named(tmp_path):
    cache = tmp_path / "file"
    cache.write_text("")
    done = lazykeops(cache, "cache", timeout=60)
    assert done.returncode == 1
    assert str(cache) in done.stderr and "LAZYKEOPS_CACHE_DIR" in done.stderr


def test_threads_first_calling_one_kernel_build_and_load_it_once():
    """What the warm-up's thread pool relies on (and CUDA's side-by-side builds): threads
    asking at once for one new kernel get it built once and loaded once."""
    import threading
    import uuid

    import numpy as np

    from lazykeops.compile import build
    from lazykeops.numpy import Genred

    c = 1 + uuid.uuid4().int % 10**6 / 10**7  # a kernel of its own: not in any cache
    x, y = np.random.rand(6, 2), np.random.rand(5, 2)
    barrier, results = threading.Barrier(4), []

    def first_call():
        routine = Genred(f"Exp(-SqDist(X,Y) * {c})", ["X = Vi(2)", "Y = Vj(2)"], axis=1)
        barrier.wait()
        results.append(routine(x, y))

    before = dict(build.stats)
    threads = [threading.Thread(target=first_call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert build.stats["builds"] - before["builds"] == 1
    assert build.stats["loads"] - before["loads"] == 1
    expected = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1) * c).sum(1, keepdims=True)
    for r in results:
        np.testing.assert_allclose(r, expected, rtol=1e-12)


def test_no_command_is_the_self_check(monkeypatch):
    """`python -m lazykeops` alone runs `main`, the self-check (README, CI, check_health),
    whatever it returns."""
    monkeypatch.setattr(cli_module, "main", lambda: 7)
    assert cli_module.cli([]) == 7


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_warmup_without_cuda_says_so(tmp_path):
    done = lazykeops(tmp_path / "cache", *WARM, "--device", "cuda", timeout=120)
    assert done.returncode == 1
    assert "--device cuda: torch sees no CUDA device here" in done.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_warmup_then_a_user_call_builds_nothing(tmp_path):
    cache = tmp_path / "cache"
    done = lazykeops(cache, *WARM, "--device", "cuda", timeout=600)
    assert done.returncode == 0, done.stderr
    assert summary_counts(done.stdout) == (2, 2, 0)
    assert user_call(cache, dim=3, device="cuda") == (0, 2)
