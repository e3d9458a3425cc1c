"""Test session set-up: one fresh kernel cache directory shared by the whole session (so
kernels compile once per session), and no compile chatter in the test output."""

import os
import tempfile

os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lazykeops-tests-"))
os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
