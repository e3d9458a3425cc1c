"""The engine headers of lazykeops/csrc on their own: small hand-written C++ programs
(tests/engine/cpp/) include them directly, with formula functors and policies in the shape
compile/codegen.py renders but written by hand (no code generation, no torch), call the
engine below its entry macro, and check it against naive loops of their own.

- cpu_engine.cpp: lk::cpu_run on Sum of a Gaussian kernel (float64, float32; N = 37,
  M = 1001), a batch with broadcast arguments (batch stride 0), 1 and 2 OpenMP threads,
  Min_ArgMin / Max_ArgMax / ArgMin with ties (the smallest index wins), LogSumExp over
  values whose exp overflows, KMin with K = 3 (ties, fewer terms than K, no term).
- cpu_chunked.cpp: the chunked path (chunk_full / chunk_tail, part, wvar, pvar, chunked
  outputs through scalar and chunk_start) and DualSum's column sums (over two spans too).
- policies.cpp: every policy's CPU path (tile) and CUDA path (acc_push / acc_fold, and
  merge over split ranges and over the lanes of a tensor-core row) run on the host, with
  ties and NaN terms.
- plan.cpp: the CUDA engine's split planner (lk_cuda_plan.h) over hand-given sizes.
- driver.cpp: the host side for NVRTC's cubins (lk_cuda_driver.h) against a recording
  stand-in of the CUDA driver: launches, their parameters, the split scheme's workspace.
- cuda_compile.cu: with nvcc, the CUDA kernels compile (-c for sm_90; nothing runs).

Each program prints "PASS <case> ..." or "FAIL <case> ..." per case and exits nonzero on
any mismatch. They are compiled once per module, concurrently, with the project's flags
(compile/build.py), after the #defines a generated source opens with (runtime/abi.py), if
that module exists, and its engine constants (compile/codegen.py: engine_defines).
"""

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CPP = Path(__file__).resolve().parent / "cpp"
CSRC = Path(__file__).resolve().parents[2] / "lazykeops" / "csrc"

# Used only if compile/build.py cannot be imported: these tests should not break with it.
_CPU_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
              "-DNDEBUG", "-Werror=overflow")
_CUDA_FLAGS = ("-O3", "-std=c++17", "-DNDEBUG")
# What torch.utils.cpp_extension adds to every nvcc command of a kernel build.
_TORCH_NVCC_FLAGS = ("-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                     "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
                     "--expt-relaxed-constexpr")

_POLICIES = ("sum_block", "sum_kahan", "sum_direct", "logsumexp", "logsumexp_weighted",
             "softmax_weight", "min_argmin", "kmin_argkmin_k3")

CASES = {
    "cpu_engine": ["sum_gaussian_f64", "sum_gaussian_f32", "batch_broadcast", "threads_1",
                   "threads_2", "threads_bitwise_equal", "min_argmin_ties", "max_argmax_ties",
                   "argmin_no_values", "logsumexp_overflow", "logsumexp_weighted_overflow",
                   "kmin_k3_ties", "kmin_k3_fewer_terms_than_k", "kmin_k3_no_term"],
    "cpu_chunked": ["chunked_sums_wvar_pvar", "chunked_outputs_scalar_chunk_start",
                    "dualsum_columns_1_thread", "dualsum_negated_2_threads",
                    "dualsum_two_spans_2_threads"],
    "policies": [f"{p}_{t}_{d}" for d in ("ties", "nan", "mostly_nan") for t in ("f64", "f32")
                 for p in _POLICIES],
    "plan": ["one_d_never_splits", "no_rows_no_split", "sums_fill_eight_waves",
             "busy_gpu_no_split", "selections_one_wave", "selections_half_busy_no_split",
             "two_tiles_per_range", "forced_split_two", "forced_split_two_terms",
             "forced_split_one_term", "workspace_limit", "sparse_small_clusters",
             "sparse_large_cluster", "row_blocks"],
    "driver": ["dense_1d_launch", "split_asks_for_its_workspace_then_merges",
               "shared_memory_opt_in_and_limit", "block_sparse_work_and_mismatches",
               "a_module_per_device", "a_refused_cubin_reports_the_drivers_error"],
}

# policies.cpp tests the policies' algorithms, not the CPU engine's vectorised loops (those
# run in cpu_engine.cpp and cpu_chunked.cpp with the project's -O3): -O2 saves a third of
# its compile time.
OPTIMISE = {"policies": ["-O2"], "plan": ["-O1"], "driver": ["-O1"]}
# driver.cpp defines the CUDA driver's entry points that lk_cuda_driver.h looks up in the
# program itself.
LINK = {"driver": ["-rdynamic", "-ldl"]}


def _cpu_flags():
    try:
        from lazykeops.compile.build import CPU_CFLAGS, CPU_LDFLAGS
    except Exception:  # noqa: BLE001 - a broken build module must not hide the engine's state
        return list(_CPU_FLAGS)
    return [f for f in (*CPU_CFLAGS, *CPU_LDFLAGS) if not f.startswith("-fvisibility")]


def _cuda_flags():
    try:
        from lazykeops.compile.build import CUDA_FLAGS
    except Exception:  # noqa: BLE001
        CUDA_FLAGS = _CUDA_FLAGS
    return [f for f in CUDA_FLAGS if "visibility" not in f] + list(_TORCH_NVCC_FLAGS)


def _prelude(folder):
    """-include of the #defines every generated source starts with, where they exist (the
    headers of the launch struct, lk_launch.h, and runtime/abi.py which writes them)."""
    if not (CSRC / "lk_launch.h").exists():
        return []
    try:
        from lazykeops.runtime.abi import source_prelude
    except Exception:  # noqa: BLE001 - the engine headers before the launch struct
        return []
    path = folder / "prelude.h"
    path.write_text(source_prelude() + "\n")
    return ["-include", str(path)]


def _engine_defines():
    """-D of the constants every generated source defines (compile/codegen.py), which the
    headers refuse to compile without."""
    from lazykeops.compile.codegen import engine_defines
    return ["-D{}={}".format(*line.split()[1:]) for line in engine_defines()]


def _cxx():
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")


def _nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    return home if os.path.exists(home) else None


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{program: (compile status, compiler output)}, every program compiled concurrently
    (one compiler call each), and {program: (exit status, stdout + stderr)} once run; once
    per test session: pytest-xdist workers share the first one's results (the folder above
    their own temporary folders is the session's)."""
    cxx = _cxx()
    if cxx is None:
        pytest.skip("no C++ compiler (g++)")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    with open(root / "engine_headers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = root / "engine_headers.json"
        if not results.exists():
            folder = root / "engine_headers"
            folder.mkdir(exist_ok=True)  # a worker that failed before may have left it
            results.write_text(json.dumps(_build_and_run(cxx, folder)))
        compiled, ran = json.loads(results.read_text())
    return ({k: tuple(v) for k, v in compiled.items()}, {k: tuple(v) for k, v in ran.items()})


def _build_and_run(cxx, folder):
    prelude = _prelude(folder) + _engine_defines()
    jobs = {}
    for name in CASES:
        cmd = [cxx, "-std=c++17", *_cpu_flags(), *OPTIMISE.get(name, []), *prelude,
               f"-I{CSRC}", f"-I{CPP}", str(CPP / f"{name}.cpp"), "-o", str(folder / name),
               *LINK.get(name, [])]
        jobs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
    nvcc = _nvcc()
    if nvcc is not None:
        cmd = [nvcc, "-c", *_cuda_flags(), "-gencode=arch=compute_90,code=sm_90", *prelude,
               f"-I{CSRC}", str(CPP / "cuda_compile.cu"), "-o", str(folder / "cuda_compile.o")]
        jobs["cuda_compile"] = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True)
    compiled = {}
    for name, job in jobs.items():
        out, _ = job.communicate(timeout=300)
        compiled[name] = (job.returncode, out)
    # threads_2 checks that the engine's team really has two threads: nothing may cap it.
    env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
    env["OMP_DYNAMIC"] = "false"
    ran = {}
    for name in CASES:
        if compiled[name][0] == 0:
            run = subprocess.run([str(folder / name)], capture_output=True, text=True,
                                 timeout=120, env=env)
            ran[name] = (run.returncode, run.stdout + run.stderr)
    return compiled, ran


def _verdicts(output):
    """{case: the rest of its report line} for the PASS / FAIL lines of a program."""
    verdicts = {}
    for line in output.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0] in ("PASS", "FAIL"):
            verdicts[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "")
    return verdicts


def _ran(builds, program):
    compiled, ran = builds
    status, out = compiled[program]
    assert status == 0, f"{program}.cpp does not compile:\n{out[-4000:]}"
    return ran[program]


@pytest.mark.parametrize("program", sorted(CASES))
def test_program_reports_every_case_and_exits_zero(builds, program):
    status, out = _ran(builds, program)
    assert set(_verdicts(out)) == set(CASES[program]), out[-4000:]
    assert status == 0, out[-4000:]


@pytest.mark.parametrize("program,case", [(p, c) for p, cases in CASES.items() for c in cases])
def test_case(builds, program, case):
    _, out = _ran(builds, program)
    verdict, detail = _verdicts(out).get(case, ("MISSING", out[-2000:]))
    assert verdict == "PASS", f"{program}: {case}: {detail}"


def test_cuda_engine_headers_compile_with_nvcc(builds):
    """Compiles only (nvcc -c, sm_90): no GPU is needed, and nothing is run."""
    compiled, _ = builds
    if "cuda_compile" not in compiled:
        pytest.skip("no nvcc")
    status, out = compiled["cuda_compile"]
    assert status == 0, f"cuda_compile.cu does not compile:\n{out[-4000:]}"
