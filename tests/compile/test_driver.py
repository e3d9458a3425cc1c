"""The CUDA host side for NVRTC's cubins (compile/driver.py, csrc/lk_cuda_driver.h) without
a GPU: it builds with the C++ compiler and agrees with Python on the launch ABI and on its
LkKernels struct; a formula's two cubin entries (its reduction, and the merge its
reduction policy shares with other formulas: where NVRTC is found) record their kernels'
names and load again from the cache, and without a CUDA driver a launch reports a failure
instead of crashing. tests/gpu/test_nvrtc_kernels.py runs the kernels."""

import ctypes

import pytest
import torch

from lazykeops.compile import build, driver, nvrtc
from lazykeops.compile.codegen import render_merge_source, render_source
from lazykeops.runtime import abi
from tests.compile.test_cuda_codegen import _spec


def test_host_side_builds_and_matches_the_abi():
    host = driver.host()
    assert host is driver.host()  # built and loaded once
    sizes = host._dll.lk_kernels_bytes
    sizes.restype = ctypes.c_int64
    assert sizes() == ctypes.sizeof(driver.LkKernels) == 40 + 8 * driver.MAX_DEVICES


@pytest.mark.skipif(not nvrtc.available(), reason="no libnvrtc")
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-driver path")
def test_a_formulas_entries_without_a_driver_fail_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path))
    build.forget_loaded()
    before = dict(build.stats)
    spec = _spec("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None, "float32")
    lib = driver.load_library(spec, "gauss", "cuda:sm_90", {})
    assert isinstance(lib, driver.CubinLibrary)
    reduction, merge = lib._entries
    for entry in lib._entries:
        assert entry.path.suffix == ".cubin" and entry.path.read_bytes()[:4] == b"\x7fELF"
    assert reduction.name.startswith(b"_ZN2lk6reduce")
    assert merge.name.startswith(b"_ZN2lk12merge_splits")
    assert build.stats["builds"] - before["builds"] == 2
    a = abi.new_launch(1, 10, 10)
    # No driver: the host side cannot load the modules (no torch device is asked for here).
    status = lib._host.launch(ctypes.byref(a), ctypes.byref(lib._kernels), 0)
    assert status == abi.FAILED
    # A refused cubin's message (tests/engine/cpp/driver.cpp checks the code reaches it).
    lib._kernels.load_error = 222
    message = lib.refusal()
    assert "CUresult 222 CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in message
    assert "LAZYKEOPS_CUDA_COMPILER=nvcc" in message and "cuda:sm_90" in message
    lib._kernels.load_error = 0
    # Another formula reduced alike builds its reduction only; the first one's entries
    # load again from the cache, in a new process as here after forget_loaded.
    cauchy = _spec("Sum", "Inv(G + SqDist(X,Y)) * B", None, None, "float32")
    other = driver.load_library(cauchy, "cauchy", "cuda:sm_90", {})
    assert other._entries[1] is merge and other._entries[0].key != reduction.key
    assert build.stats["builds"] - before["builds"] == 3
    build.forget_loaded()
    again = driver.load_library(spec, "gauss", "cuda:sm_90", {})
    assert build.stats["builds"] - before["builds"] == 3
    assert [e.key for e in again._entries] == [reduction.key, merge.key]
    assert [e.name for e in again._entries] == [reduction.name, merge.name]


def _sections(data):
    """{name: bytes} of an ELF64 little-endian file's sections."""
    import struct

    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)

    def header(i):  # (name offset, file offset, size)
        fields = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return fields[0], fields[4], fields[5]
    strings = header(shstrndx)[1]
    out = {}
    for i in range(shnum):
        name, offset, size = header(i)
        out[data[strings + name:data.index(b"\0", strings + name)].decode()] = \
            data[offset:offset + size]
    return out


def _parameter_sizes(info):
    """The kernel's parameter sizes by ordinal, from its .nv.info section's
    EIATTR_KPARAM_INFO entries (attribute 0x17: index, ordinal, offset, flags whose bits
    18-31 are the size)."""
    import struct

    params, pos = {}, 0
    while pos + 4 <= len(info):
        fmt, attr = info[pos], info[pos + 1]
        size = struct.unpack_from("<H", info, pos + 2)[0] if fmt == 4 else 0
        if attr == 0x17:
            _, ordinal, _, flags = struct.unpack_from("<IHHI", info, pos + 4)
            params[ordinal] = (flags >> 18) & 0x3FFF
        pos += 4 + size
    return [params[k] for k in sorted(params)]


@pytest.mark.skipif(not nvrtc.available(), reason="no libnvrtc")
@pytest.mark.parametrize("block_sparse", [False, True])
def test_the_kernels_take_the_parameters_the_host_side_packs(block_sparse):
    # lk_cuda_driver.h's launch packs (nbatch, nout, nred, work, ArgTable, Outputs,
    # partial) and the merge's (nbatch, nout, nsplit, partial, Outputs) with these sizes
    # (tests/engine/cpp/driver.cpp checks their bytes): the compiled kernels agree.
    import dataclasses

    spec = dataclasses.replace(_spec("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None, "float32"),
                               block_sparse=block_sparse)
    nargs = len(spec.args)
    reduction, merge = nvrtc.kernel_names(spec)
    compiled = nvrtc.compile_cubin(render_source(spec, device_only=True), [reduction], "90")
    reduce_info = _sections(compiled.cubin)[".nv.info." + compiled.lowered[reduction]]
    compiled = nvrtc.compile_cubin(render_merge_source(spec), [merge], "90")
    merge_info = _sections(compiled.cubin)[".nv.info." + compiled.lowered[merge]]
    assert _parameter_sizes(reduce_info) == [8, 8, 8, 56 if block_sparse else 8, 16 * nargs,
                                             48, 8]
    assert _parameter_sizes(merge_info) == [8, 8, 4, 8, 48]
