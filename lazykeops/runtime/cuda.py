"""Launching a GenredCore's CUDA kernels: on the arrays' device and its current stream,
with the split scheme's workspace when the kernel asks for one, and wide outputs computed
slice by slice.

Workspace: the library plans its split itself; when it needs scratch for partial States it
returns NEEDS_WORKSPACE with the size in the struct, and the workspace comes from the
framework's allocator (stream-ordered: safely freed once the launch is queued). The size
is remembered per library and sizes, so that repeated calls launch at the first try.

Wide outputs: a thread keeps its rows' accumulators in registers, so an output of 64 or 256
components (kernel matrix times many columns) would spill. Reductions whose output
components are independent (`ReductionSpec.slices`) compute outputs wider than
SLICE_ABOVE in slices of OUTPUT_SLICE components, one kernel per slice, each writing its
columns of the output (formula/slicing.py keeps each kernel from computing the others).
"""

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

from ..errors import LazyKeOpsError
from ..formula.slicing import components
from . import abi

SLICE_ABOVE, OUTPUT_SLICE = 32, 16
# (library key, nbatch, nout, nred, scheme, range blocks, most terms of a cluster) -> bytes
# it asked for
_WORKSPACE_BYTES = {}


def launch_cuda(core, dtype, like, a, backend, ranges=None):
    """Run `core` on the GPU of `like` with the filled LkLaunch `a`; the engine's status.
    `ranges`: the call's RangeLayout (runtime/ranges.py), or None."""
    B = core.backend
    context, a.stream = B.launch_context(B.device(like))
    a.scheme = abi.SCHEMES[backend]
    target = B.target(B.device(like))
    with context:
        parts = output_slices(core) or ((0, core),)
        if len(parts) > 1:  # slices: their first builds side by side
            build_kernels([part for _, part in parts], dtype, target, ranges is not None)
        for start, part in parts:
            lib = part.kernel(dtype, target, block_sparse=ranges is not None)
            a.vals_width, a.vals_offset = core.nvals, start if core.nvals else 0
            a.idx_width, a.idx_offset = core.nidx, start if core.nidx else 0
            if ranges is not None:
                ranges.fill_cuda(a, lib.block_rows)
            key = (lib.key, a.nbatch, a.nout, a.nred, a.scheme, a.range_blocks,
                   a.max_cluster_terms)
            workspace = None  # held until the launch is queued (stream-ordered free)
            need = _WORKSPACE_BYTES.get(key, 0)
            while True:
                if need:
                    workspace = B.empty((need,), "uint8", like)
                    a.workspace, a.workspace_bytes = B.data_ptr(workspace), need
                else:
                    a.workspace, a.workspace_bytes = None, 0
                status = lib.launch(ctypes.byref(a))
                if status != abi.NEEDS_WORKSPACE:
                    break
                if a.workspace_bytes <= need:  # asked again for no more: never loop
                    return abi.FAILED
                if len(_WORKSPACE_BYTES) > 4096:  # many distinct sizes: forget the old ones
                    _WORKSPACE_BYTES.clear()
                need = _WORKSPACE_BYTES[key] = a.workspace_bytes
            if status == abi.MODULE_LOAD:  # the one status whose message is the library's
                raise LazyKeOpsError(f"formula '{core.text}': {lib.refusal()}")
            if status:
                return status
    return abi.OK


def build_kernels(cores, dtype, target, block_sparse):
    """Build the CUDA kernels of `cores` (with their output slices) that are not loaded yet,
    side by side: each is one nvcc process of a few seconds, and the kernels a call needs
    together (the slices of one output, the two gradient Sums of a backward pass) then cost
    the user one wait instead of a queue of them."""
    parts = [part for core in cores for _, part in (output_slices(core) or ((0, core),))]
    missing = [p for p in parts if p.kernel_key(dtype, target, block_sparse) not in p._kernels]
    if len(missing) > 1:
        with ThreadPoolExecutor(min(len(missing), os.cpu_count() or 1)) as pool:
            for _ in pool.map(lambda p: p.kernel(dtype, target, block_sparse), missing):
                pass  # an error of any build is raised here


def output_slices(core):
    """((start, core of that slice), ...) for a wide output, else (); built once."""
    if core.output_slices is None:
        which = core.reduction.sliced_formula(len(core.formulas))
        width = core.formulas[which].dim if which is not None else 0
        slices = []
        for start in range(0, width if width > SLICE_ABOVE else 0, OUTPUT_SLICE):
            formulas = list(core.formulas)
            formulas[which] = components(formulas[which], start, min(OUTPUT_SLICE, width - start))
            slices.append((start, type(core)(
                formulas, core.aliases, core.reduction.name, core.axis, core.k,
                framework=core.framework, text=core.text, **core.options)))
        core.output_slices = tuple(slices)
    return core.output_slices
