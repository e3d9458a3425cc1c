"""NVRTC compiles the device code of generated CUDA sources (compile/nvrtc.py): every
codegen case (tiled, chunked, tensor-core variants, each dtype) to an sm_90 cubin with its
reduction's lowered name, and the split merge of its reduction policy to another (one
source per policy: formulas reduced alike share it); a refused source raises NvrtcError
with the compiler's first error. No GPU needed; skipped where no libnvrtc is found (CI:
the CPU wheel of torch comes without it; `pip install nvidia-cuda-nvrtc` brings it)."""

import pytest

from lazykeops.compile import nvrtc
from lazykeops.compile.codegen import render_merge_source, render_source
from tests.compile.test_cuda_codegen import (CASES, TC_ALIASES, TC_CASES, TC_MODES,
                                             WIDE_ALIASES, WIDE_CASES, _spec)

pytestmark = pytest.mark.skipif(not nvrtc.available(), reason="no libnvrtc")


def specs(dtype):
    cases = CASES if dtype == "float32" else [CASES[0], CASES[6], CASES[9]]
    out = [_spec(*case, dtype) for case in cases]
    out += [_spec(*case, dtype, WIDE_ALIASES) for case in WIDE_CASES[:2]]
    if dtype in TC_MODES:
        out += [_spec(*case, dtype, TC_ALIASES, TC_MODES[dtype])
                for case in (*TC_CASES[:2], TC_CASES[-1])]  # the last: a weighted distance
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_device_sources_compile_to_cubins(dtype):
    for spec in specs(dtype):
        source = render_source(spec, device_only=True)
        assert "LK_CUDA_ENTRY" not in source and "namespace {" not in source
        reduction, merge = nvrtc.kernel_names(spec)
        compiled = nvrtc.compile_cubin(source, [reduction], "90")
        assert compiled.cubin[:4] == b"\x7fELF", source
        assert compiled.lowered[reduction].startswith("_ZN2lk6reduce")
        merged = nvrtc.compile_cubin(render_merge_source(spec), [merge], "90")
        assert merged.cubin[:4] == b"\x7fELF"
        assert merged.lowered[merge].startswith("_ZN2lk12merge_splits")


def test_formulas_reduced_alike_share_their_merge_source():
    gauss = _spec("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None, "float32")
    cauchy = _spec("Sum", "Inv(G + SqDist(X,Y)) * B", None, None, "float32")
    lse = _spec("LogSumExp", "-G*SqDist(X,Y)", None, None, "float32")
    assert render_merge_source(gauss) == render_merge_source(cauchy)
    assert render_merge_source(gauss) != render_merge_source(lse)
    assert nvrtc.kernel_names(gauss)[1] == nvrtc.kernel_names(cauchy)[1]


def test_a_refused_source_names_the_first_error():
    spec = _spec("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None, "float32")
    broken = render_source(spec, device_only=True).replace("using LkReduction", "usin LkReduction")
    with pytest.raises(nvrtc.NvrtcError, match=r"could not compile gauss\.cu: .*error"):
        nvrtc.compile_cubin(broken, nvrtc.kernel_names(spec)[:1], "90", name="gauss.cu")


def test_the_version_is_a_pair_of_numbers():
    major, minor = nvrtc.version()
    assert major >= 11 and minor >= 0


def test_a_refused_build_names_the_formula_and_keeps_the_source(tmp_path, monkeypatch):
    # Through the cache's build (compile/build.py), as a first call compiles: the message
    # names the formula, the kept source and NVRTC's first error (issue 17 item 6).
    from pathlib import Path

    from lazykeops.compile import build
    from lazykeops.errors import CompileError

    monkeypatch.setenv("LAZYKEOPS_CACHE_DIR", str(tmp_path))
    spec = _spec("Sum", "Exp(-G*SqDist(X,Y)) * B", None, None, "float32")
    broken = render_source(spec, device_only=True).replace("using LkReduction", "usin LkReduction")
    with pytest.raises(CompileError) as info:
        build.load_kernel(broken, "Sum(Exp(-G*SqDist(X,Y)) * B)", "cuda:sm_90",
                          nvrtc_names=nvrtc.kernel_names(spec)[:1])
    message = str(info.value)
    assert message.startswith("compiling Sum(Exp(-G*SqDist(X,Y)) * B) failed")
    assert "first error: NVRTC could not compile Sum(Exp(-G*SqDist(X,Y)) * B): " in message
    assert "error" in message.split("first error: ")[1]
    kept = Path(message.split("source kept at ")[1].split(";")[0])
    assert kept.read_text() == broken and kept.parent == tmp_path / "failed"
