"""The precompiled engine prelude of CPU kernels (compile/pch.py): split from the generated
source, built once per cache and shared by kernels, actually used by the compiler (not
silently refused), checked before use, and never the cause of a failed or wrong kernel."""

import subprocess
import uuid

import numpy as np
import pytest

from lazykeops import CompileError
from lazykeops.compile import build, pch
from lazykeops.numpy import Genred


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("pch-cache")
        mp.setenv("LAZYKEOPS_CACHE_DIR", str(folder))
        yield folder


def preludes(cache):
    return sorted(cache.glob("precompiled/*/prelude.h.gch"))


def gaussian(c):
    """A Gaussian sum with a constant of its own: a new kernel, built in this cache."""
    x, y = np.random.rand(7, 2), np.random.rand(5, 2)
    out = Genred(f"Exp(-SqDist(X,Y) * {c})", ["X = Vi(2)", "Y = Vj(2)"], axis=1)(x, y)
    expected = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1) * c).sum(1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_kernels_share_one_precompiled_prelude(cache):
    gaussian(0.5)
    gaussian(0.25)
    assert len(preludes(cache)) == 1


def test_the_compiler_uses_it(cache):
    """`-H` lists what the compiler reads: `! prelude.h.gch` when it takes the PCH, `x` when
    it finds it unusable (and then reads prelude.h)."""
    gaussian(0.125)
    header = preludes(cache)[0].with_suffix("")
    source = next(cache.glob("*/kernel.cpp")).read_text()
    assert pch.split_prelude(source) == header.read_text()
    out = subprocess.run([*build._cpu_compile_cmd(), "-H", "-include", str(header), "-x", "c++",
                          "-fsyntax-only", "-"], input=source, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"! {header}.gch" in out.stderr.splitlines()[0]


def test_a_damaged_prelude_is_rebuilt(cache):
    gaussian(0.0625)
    gch = preludes(cache)[0]
    data = bytearray(gch.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gch.write_bytes(bytes(data))
    gaussian(0.03125)  # built with a rebuilt prelude, not the damaged one
    assert preludes(cache) == [gch] and gch.read_bytes() != bytes(data)


def test_a_source_error_is_reported_as_without_it(cache):
    gaussian(0.015625)  # a kernel in this cache, whichever tests of the module ran before
    kernel = next(cache.glob("*/kernel.cpp")).read_text()
    broken = kernel.replace("namespace {", f"// {uuid.uuid4()}\nnamespace {{ int oops = nope;", 1)
    with pytest.raises(CompileError, match="nope"):
        build.load_kernel(broken, "a broken kernel")


def test_sources_without_the_engine_prelude_have_none():
    assert pch.split_prelude("#define A 1\nint a;\n") is None
    assert pch.split_prelude('// a kernel\n#define A 1\n#include "lk_cpu_engine.h"\nint a;') \
        == '#define A 1\n#include "lk_cpu_engine.h"\n'
