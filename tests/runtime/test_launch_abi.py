"""The one C entry point: a library checks the caller's struct, reports its ABI at load
(a library of another ABI is rebuilt, never called), and its manifest records its
interface."""

import ctypes
import json
import uuid

import pytest
import torch

from lazykeops import CompileError
from lazykeops.compile import build
from lazykeops.runtime import abi
from lazykeops.torch import Genred


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path))
    build.forget_loaded()
    yield tmp_path
    build.forget_loaded()


def test_struct_and_manifest(cache):
    g = Genred("SqDist(x,y)", ["x = Vi(2)", "y = Vj(2)"], reduction_op="Min_ArgMin", axis=1)
    x, y = torch.rand(5, 2, dtype=torch.float64), torch.rand(7, 2, dtype=torch.float64)
    vals, idx = g(x, y)
    assert torch.equal(idx[:, 0], torch.cdist(x, y).argmin(1))
    lib = g.core.kernel("float64")
    assert (lib._dll.lk_abi_version(), lib._dll.lk_launch_bytes()) == \
        (abi.ABI_VERSION, abi.LAUNCH_BYTES)
    manifest = json.loads((lib.path.parent / "manifest.json").read_text())
    assert manifest["interface"] == {
        "abi_version": abi.ABI_VERSION, "dtype": "float64", "axis": 1,
        "arguments": [["x", 0, 2], ["y", 1, 2]],
        "outputs": {"values": 1, "indices": 1, "columns": 0}, "block_sparse": False}

    # A dense library refuses block-sparse fields (and a block-sparse one their absence).
    a = abi.new_launch(1, 5, 7)
    a.row_bounds = ctypes.addressof(ctypes.c_int64(0))
    assert lib.launch(ctypes.byref(a)) == abi.STATUS["RANGES_MISMATCH"]
    sparse = g.core.kernel("float64", block_sparse=True)
    assert sparse.launch(ctypes.byref(abi.new_launch(1, 5, 7))) == abi.STATUS["RANGES_MISMATCH"]

    # A struct of another version or size is refused before anything is read from it.
    for field, value in (("abi_version", abi.ABI_VERSION + 1), ("struct_bytes", 8)):
        a = abi.LkLaunch()
        a.abi_version, a.struct_bytes = abi.ABI_VERSION, abi.LAUNCH_BYTES
        setattr(a, field, value)
        assert lib.launch(ctypes.byref(a)) == abi.STATUS["ABI_MISMATCH"]
    assert lib.launch(None) == abi.STATUS["ABI_MISMATCH"]


def test_a_library_of_another_abi_is_not_loaded(cache):
    source = (f"// {uuid.uuid4()}\n"
              + abi.source_prelude().replace(f"LK_ABI_VERSION {abi.ABI_VERSION}",
                                             "LK_ABI_VERSION 999")
              + '\nLK_ABI_EXPORTS\nextern "C" __attribute__((visibility("default"))) '
                "int lk_launch(LkLaunch*) { return 0; }\n")
    with pytest.raises(CompileError, match="cannot be loaded"):
        build.load_kernel(source, "kernel of another ABI")


def test_status_codes_are_emitted_from_one_place():
    prelude = abi.source_prelude()
    for name, code in abi.STATUS.items():
        assert f"#define LK_STATUS_{name} {code}" in prelude
    assert prelude.endswith('#include "lk_launch.h"')
