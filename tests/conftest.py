"""Test session set-up: one kernel cache directory shared by the whole session (so kernels
compile once per session), and no compile chatter in the test output.

The cache is LAZYKEOPS_CACHE_DIR if set (kept: reuse it across sessions to skip
recompiling), else a fresh temporary directory, removed when the session ends."""

import os
import shutil
import tempfile

if "LAZYKEOPS_CACHE_DIR" in os.environ:
    _CREATED_CACHE = None
else:
    _CREATED_CACHE = tempfile.mkdtemp(prefix="lazykeops-tests-")
    os.environ["LAZYKEOPS_CACHE_DIR"] = _CREATED_CACHE
os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")


def pytest_sessionfinish(session, exitstatus):
    if _CREATED_CACHE is not None:
        shutil.rmtree(_CREATED_CACHE, ignore_errors=True)
