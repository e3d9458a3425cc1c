"""The launcher: from checked arguments to the outputs, through the one C entry point.

`launch(core, sig, prepared)` allocates the outputs of `core` (a GenredCore) for the
Signature `sig`, fetches the kernel for the arrays' dtype and device (compiled and cached on
first use), fills one LkLaunch struct (abi.py) and calls the library; `prepare` makes the
arrays contiguous first, broadcast over the batch where they have batch dims of their own.
Every reduction takes this one `prepare -> launch` path: Genred after its signature step,
the LazyTensor front end with the Signature its expression already checked (its leaves in
their own layout), and torch autograd's forward with either.
The status codes of the engines are turned into errors here, in one place.
"""

import ctypes

from ..errors import LazyKeOpsError
from ..formula import CAT_P
from . import abi
from .cuda import launch_cuda


def prepare(core, sig, arrays, lazy=False):
    """The arrays as the engine reads them: contiguous, and those with batch dims of their
    own (a nonzero stride in `sig`) broadcast over the whole batch. In memory the layouts
    (..., N, D) of Genred and (..., N, 1, D) of a LazyTensor leaf (`lazy`) are the same:
    only the trailing dims kept when broadcasting differ. Nothing is checked here (the
    signature step or the LazyTensor's construction did)."""
    B = core.backend
    if not sig.batch:  # the common case, in one pass
        contiguous = B.contiguous
        return [contiguous(x) for x in arrays]
    prepared = []
    for a, x, stride in zip(core.aliases, arrays, sig.strides):
        if stride:
            inner = 3 if lazy else 1 if a.cat == CAT_P else 2
            x = B.prepare(x, (*sig.batch, *x.shape[len(x.shape) - inner:]))
        else:  # one batch: the engine reads it from its first element (0-d included)
            x = B.contiguous(x)
        prepared.append(x)
    return prepared


def output(core, out, shape, dtype, like):
    """A new output array, or `out` checked: contiguous, of this shape and dtype."""
    B = core.backend
    if out is None:
        return B.empty(shape, dtype, like)
    if not B.is_array(out) or tuple(out.shape) != tuple(shape) or \
            B.dtype_name(out) != dtype or B.prepare(out, shape) is not out:
        got = (tuple(out.shape), B.dtype_name(out)) if B.is_array(out) else type(out)
        raise LazyKeOpsError(f"out= for formula '{core.text}' must be a contiguous "
                             f"{dtype} array of shape {shape}, got {got}")
    return out


def check_k(core, sig):
    """A K-reduction needs at least K terms on the reduced axis."""
    if core.k > sig.nred:
        raise LazyKeOpsError(f"reduction {core.reduction.name} with K={core.k} needs at "
                             f"least K terms, but the reduced axis has {sig.nred}, for "
                             f"formula '{core.text}'")


def launch(core, sig, prepared, out=None, backend="auto", ranges=None):
    """The outputs of `core` on `prepared` arrays (see `prepare`): values, indices,
    (values, indices) or (values, columns), as the reduction returns. `ranges`: a
    BlockSparse (runtime/ranges.py), checked against these sizes here, before the kernel
    is fetched; its rows with fewer than K terms end in empty slots, as dense rows do
    with +inf terms."""
    layout = None if ranges is None else ranges.layout(core.axis, sig.nout, sig.nred, sig.batch)
    if core.k is not None and layout is None:
        check_k(core, sig)
    B = core.backend
    like = prepared[0]
    vals_shape, idx_shape, cols_shape = sig.output_shapes(core)
    vals = None if not vals_shape else B.empty(vals_shape, sig.dtype, like) if out is None \
        else output(core, out, vals_shape, sig.dtype, like)
    idx = B.empty(idx_shape, "int64", like) if idx_shape else None
    cols = B.empty(cols_shape, sig.dtype, like) if cols_shape else None
    if sig.nbatch and sig.nout:
        _call(core, sig, prepared, vals, idx, cols, backend, layout)
    elif cols is not None:
        cols[...] = 0
    if cols is not None:
        return vals, cols
    if vals is not None and idx is not None:
        return vals, idx
    return vals if vals is not None else idx


def _call(core, sig, prepared, vals, idx, cols, backend, layout):
    B = core.backend
    pointers = core._pointer_array(*[B.data_ptr(x) for x in prepared])
    strides = core._stride_array(*sig.strides)
    a = abi.new_launch(sig.nbatch, sig.nout, sig.nred)
    a.args, a.batch_strides = ctypes.addressof(pointers), ctypes.addressof(strides)
    if layout is not None:
        layout.fill(a)
    if vals is not None:
        a.vals = B.data_ptr(vals)
    if idx is not None:
        a.idx = B.data_ptr(idx)
    if sig.device == "cpu":
        if cols is not None:
            a.cols = B.data_ptr(cols)
        a.nthreads = B.num_threads()
        status = core.kernel(sig.dtype, block_sparse=layout is not None).launch(ctypes.byref(a))
    else:
        status = launch_cuda(core, sig.dtype, prepared[0], a, backend, layout)
    if status == abi.SHARED_MEMORY:
        raise LazyKeOpsError(f"the j-variables of formula '{core.text}' are too large: one "
                             "term does not fit in the GPU's shared memory")
    if status != abi.OK:
        name = next((n for n, c in abi.STATUS.items() if c == status), "unknown")
        raise RuntimeError(f"the kernel for formula '{core.text}' failed (status {status}: "
                           f"{name})")
