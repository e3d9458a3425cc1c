"""lazykeops for numpy arrays: the same Genred and generic_* helpers as lazykeops.torch."""

from ..tensor.generic import make_generic
from ..torch.genred import Genred as _TorchGenred


class Genred(_TorchGenred):
    __doc__ = _TorchGenred.__doc__.replace("torch tensors", "numpy arrays")
    framework = "numpy"


generic_sum = make_generic(Genred, "Sum")
generic_logsumexp = make_generic(Genred, "LogSumExp")
generic_argmin = make_generic(Genred, "ArgMin")
generic_argkmin = make_generic(Genred, "ArgKMin")

__all__ = ["Genred", "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin"]
