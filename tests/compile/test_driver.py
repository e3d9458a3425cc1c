"""The CUDA host side for NVRTC's cubins (compile/driver.py, csrc/lk_cuda_driver.h) without
a GPU: it builds with the C++ compiler and agrees with Python on the launch ABI and on its
LkKernels struct; a formula's cubin entry (where NVRTC is found) records its kernels'
names and loads, and without a CUDA driver its launch reports a failure instead of
crashing. tests/gpu/test_nvrtc_kernels.py runs the kernels."""

import ctypes

import pytest
import torch

from lazykeops.compile import build, driver, nvrtc
from lazykeops.compile.codegen import render_source
from lazykeops.runtime import abi
from tests.compile.test_cuda_codegen import _spec


def test_host_side_builds_and_matches_the_abi():
    host = driver.host()
    assert host is driver.host()  # built and loaded once
    sizes = host._dll.lk_kernels_bytes
    sizes.restype = ctypes.c_int64
    assert sizes() == ctypes.sizeof(driver.LkKernels) == 24 + 8 * driver.MAX_DEVICES


@pytest.mark.skipif(not nvrtc.available(), reason="no libnvrtc")
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-driver path")
def test_a_cubin_entry_without_a_driver_fails_cleanly():
    spec = _spec("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None, "float32")
    names = nvrtc.kernel_names(spec)
    lib = build.load_kernel(render_source(spec, device_only=True), "gauss", "cuda:sm_90",
                            nvrtc_names=names)
    assert isinstance(lib, driver.CubinLibrary)
    assert lib.path.suffix == ".cubin" and lib.path.read_bytes()[:4] == b"\x7fELF"
    assert all(name.startswith(b"_ZN2lk") for name in lib._names)
    a = abi.new_launch(1, 10, 10)
    # No driver: the host side cannot load the module (no torch device is asked for here).
    status = lib._host.launch(ctypes.byref(a), ctypes.byref(lib._kernels), 0)
    assert status == abi.FAILED
    # The same source, key and manifest load again from the cache.
    build.forget_loaded()
    again = build.load_kernel(render_source(spec, device_only=True), "gauss", "cuda:sm_90",
                              nvrtc_names=names)
    assert again.key == lib.key and again._names == lib._names
