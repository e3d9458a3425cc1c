"""The torch binding of the Genred core."""

import torch

from .autograd import call
from .op_keys import core_key
from ..tensor import lazy
from ..runtime.backends import get_backend
from ..runtime.genred import GenredFront

# Set at import, not on first use inside a function that torch.compile traces (a side
# effect there trips Dynamo's guards): the backend object, and the tensor class by which
# LazyTensor recognises torch data (type(x).__module__ is not traceable for a Parameter).
get_backend("torch")
lazy.TORCH_TENSOR[:] = [torch.Tensor]


class Genred(GenredFront):
    """A reduction of a string formula, callable on torch tensors.

    Genred(formula, aliases, reduction_op="Sum", axis=0, dtype=None, opt_arg=None,
           formula2=None, cuda_type=None, dtype_acc="auto", use_double_acc=False,
           sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=False,
           use_fast_math=True)(*args, backend="auto", device_id=-1, ranges=None, out=None)

    As in pykeops 2.3: axis=0 reduces over i (the output is indexed by j), axis=1 reduces
    over j (the output is indexed by i). opt_arg is K for KMin/ArgKMin/KMin_ArgKMin;
    formula2 is the weight of LogSumExp and SumSoftMaxWeight. Index outputs are int64;
    Min_ArgMin, Max_ArgMax and KMin_ArgKMin return (values, indices). dtype_acc="float64"
    (or use_double_acc=True) and sum_scheme choose how sums accumulate; dtype, cuda_type,
    enable_chunks, rec_multVar_highdim and use_fast_math are accepted and change nothing
    (runtime/options.py says why); device_id must be -1 or the GPU holding the tensors.
    ranges: pykeops's block-sparse 6-tuple (runtime/ranges.py: layout, batch dims, the
    identity of rows with no terms); gradients use its transposed half.
    """

    framework = "torch"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        core_key(self.core)  # now: under torch.compile, Dynamo reads it (torch/op_keys.py)

    def __call__(self, *args, **options):
        if not options:  # the usual call: no keyword to read
            return call(self.core, args)
        opts = self._call_options(options)
        if opts["device_id"] != -1:
            self.core.check_device_id(args, opts["device_id"])
        return call(self.core, args, backend=opts["backend"], out=opts["out"],
                    ranges=opts["ranges"])
