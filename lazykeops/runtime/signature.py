"""The signature step: what a call will compute, from its arguments' metadata alone.

`call_signature` takes shapes, the common dtype and device (already checked by the front
end, which converts Python numbers), and returns a `Signature`: sizes N and M, the
broadcast batch shape, each argument's batch stride, and from it the output shapes. It
allocates nothing and compiles nothing, so the same function serves the eager path, fake
(meta) tensors under torch.compile, and any other binding. Shapes follow pykeops: an i- or
j-variable of dim D is (..., N, D) or (..., M, D), a parameter (..., D); batch dims
broadcast as in torch.
"""

from ..errors import LazyKeOpsError
from ..formula import CAT_I, CAT_J, CAT_P

CAT_WORDS = {CAT_I: "i-indexed", CAT_J: "j-indexed", CAT_P: "a parameter"}


class Signature:
    """One call's sizes: dtype and device names, the batch shape and its product, the
    output rows `nout` and reduced terms `nred` (N and M, swapped for a reduction over i),
    and per argument the elements from one batch to the next (0 when shared)."""

    __slots__ = ("dtype", "device", "batch", "nbatch", "nout", "nred", "strides")

    def __init__(self, dtype, device, batch, nout, nred, strides):
        self.dtype, self.device, self.batch = dtype, device, batch
        nbatch = 1
        for b in batch:
            nbatch *= b
        self.nbatch, self.nout, self.nred, self.strides = nbatch, nout, nred, strides

    def output_shapes(self, core):
        """(values, indices, columns) shapes of `core`'s outputs; None where it has none."""
        batch = self.batch
        return ((*batch, self.nout, core.nvals) if core.nvals else None,
                (*batch, self.nout, core.nidx) if core.nidx else None,
                (*batch, self.nred, core.ncols) if core.ncols else None)


def check_shape(alias, shape, text):
    """An argument's shape against its alias: (..., N, D), (..., M, D) or (..., D)."""
    if alias.cat == CAT_P:
        ok = len(shape) >= 1 and shape[-1] == alias.dim
        expected = f"(..., {alias.dim})"
    else:
        ok = len(shape) >= 2 and shape[-1] == alias.dim
        expected = f"(..., {'N' if alias.cat == CAT_I else 'M'}, {alias.dim})"
    if not ok:
        raise LazyKeOpsError(f"argument {alias.name} of formula '{text}' is "
                             f"{CAT_WORDS[alias.cat]} of dim {alias.dim}: expected shape "
                             f"{expected}, got {tuple(shape)}")


def sizes_and_batch(aliases, shapes, text):
    """({CAT_I: N, CAT_J: M}, broadcast batch shape), sizes checked across variables."""
    sizes, owner, batches = {}, {}, []
    for a, shape in zip(aliases, shapes):
        if a.cat != CAT_P:
            n = shape[-2]
            if a.cat in sizes and sizes[a.cat] != n:
                letter = "N" if a.cat == CAT_I else "M"
                raise LazyKeOpsError(
                    f"arguments {owner[a.cat]} and {a.name} of formula '{text}' are both "
                    f"{CAT_WORDS[a.cat]} but have {letter} = {sizes[a.cat]} and {n}")
            sizes[a.cat], owner[a.cat] = n, a.name
            batches.append((a.name, tuple(shape[:-2])))
        else:
            batches.append((a.name, tuple(shape[:-1])))
    if not any(b for _, b in batches):
        return sizes, ()
    return sizes, broadcast_batch(batches, text)


def broadcast_batch(batches, text):
    """The broadcast of (name, batch shape) pairs; the error names them all."""
    result = broadcast([b for _, b in batches])
    if result is None:
        shown = ", ".join(f"{n}: {tuple(s)}" for n, s in batches)
        raise LazyKeOpsError(f"batch dimensions of formula '{text}' do not broadcast ({shown})")
    return result


def broadcast(shapes):
    """The broadcast of batch shapes as torch broadcasts them (1 goes with any size, 0
    included), or None when they do not broadcast. The one rule of both front ends."""
    ndim = max(len(b) for b in shapes)
    result = [1] * ndim
    for b in shapes:
        for k, size in enumerate((1,) * (ndim - len(b)) + tuple(b)):
            if size != 1:
                if result[k] not in (1, size):
                    return None
                result[k] = size
    return tuple(result)


def batch_strides(aliases, shapes):
    """Per argument, elements from one batch to the next: 0 when it has no batch dims of
    its own (or only 1s), else the size of one batch of it."""
    strides = []
    for a, shape in zip(aliases, shapes):
        ninner = 1 if a.cat == CAT_P else 2
        own = shape[:len(shape) - ninner]
        if not own or all(s == 1 for s in own):
            strides.append(0)
        else:
            per_batch = 1
            for s in shape[len(shape) - ninner:]:
                per_batch *= s
            strides.append(per_batch)
    return tuple(strides)


def call_signature(core, shapes, dtype, device):
    """The Signature of `core` called on arrays of these shapes (a 0-d parameter of a
    dim-1 alias counts as (1,)), or a LazyKeOpsError naming the argument at fault."""
    shapes = [(1,) if len(s) == 0 and a.cat == CAT_P and a.dim == 1 else tuple(s)
              for a, s in zip(core.aliases, shapes)]
    for a, shape in zip(core.aliases, shapes):
        check_shape(a, shape, core.text)
    sizes, batch = sizes_and_batch(core.aliases, shapes, core.text)
    nout = sizes[CAT_I if core.axis == 1 else CAT_J]
    nred = sizes[CAT_J if core.axis == 1 else CAT_I]
    return Signature(dtype, device, batch, nout, nred, batch_strides(core.aliases, shapes))
