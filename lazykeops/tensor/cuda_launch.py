"""Launching a GenredCore's CUDA kernels: on the arrays' device and its current stream,
with the split scheme's workspace when the kernel's planner asks for one, and wide
outputs computed slice by slice.

Wide outputs: a thread keeps its rows' accumulators in registers, so an output of 64 or 256
components (kernel matrix times many columns) would spill. Reductions whose output
components are independent compute outputs wider than SLICE_ABOVE in slices of
OUTPUT_SLICE components, one kernel per slice, each writing its columns of the output
(formula/slicing.py keeps each kernel from computing the other components).
"""

import ctypes

from ..formula.slicing import components

# backend= -> the CUDA engine's scheme (csrc/lk_cuda_engine.cuh): 0 auto, 1 1D, 2 split.
CUDA_SCHEMES = {"auto": 0, "GPU": 0, "GPU_1D": 1, "GPU_2D": 2}
# The formula whose components are sliced: 0 the formula itself, 1 the weights.
SLICED_FORMULA = {"Sum": 0, "Min": 0, "Max": 0, "ArgMin": 0, "ArgMax": 0, "Min_ArgMin": 0,
                  "Max_ArgMax": 0, "LogSumExp": 0, "SumSoftMaxWeight": 1}
SLICE_ABOVE, OUTPUT_SLICE = 32, 16
_LAYOUT = ctypes.c_int64 * 4


def launch_cuda(core, dtype, like, sizes, ptrs, bstrides, vals_ptr, idx_ptr, backend):
    """Run `core` on the GPU of `like`; the engine's status (0 on success)."""
    B = core.backend
    nbatch, nout, nred = sizes
    context, stream = B.launch_context(B.device(like))
    target = B.target(B.device(like))
    with context:
        for start, part in output_slices(core) or ((0, core),):
            lib = part.kernel(dtype, target)
            layout = _LAYOUT(core.nvals, start if core.nvals else 0,
                             core.nidx, start if core.nidx else 0)
            # Partial results of the split scheme live in a workspace from the framework's
            # allocator (stream-ordered: safely freed once the launch is queued).
            nsplit = lib.plan(nbatch, nout, nred, CUDA_SCHEMES[backend])
            workspace = B.empty((nbatch * nsplit * nout * lib.state_bytes(),), "uint8",
                                like) if nsplit > 1 else None
            status = lib.run(nbatch, nout, nred, ptrs, bstrides, vals_ptr, idx_ptr, layout,
                             nsplit, B.data_ptr(workspace) if nsplit > 1 else None, stream)
            if status:
                return status
    return 0


def output_slices(core):
    """((start, core of that slice), ...) for a wide output, else (); built once."""
    if core.output_slices is None:
        which = SLICED_FORMULA.get(core.reduction.name)
        if core.reduction.name == "LogSumExp" and len(core.formulas) > 1:
            which = 1  # the weights
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
