"""lazykeops for numpy arrays: the same Genred and generic_* helpers as lazykeops.torch."""

from ..errors import ranges_error
from ..tensor.generic import make_generic
from ..tensor.lazy_api import make_lazy_api
from ..torch.genred import Genred as _TorchGenred


class Genred(_TorchGenred):
    __doc__ = _TorchGenred.__doc__.replace("torch tensors", "numpy arrays")
    framework = "numpy"

    def __call__(self, *args, backend="auto", out=None, ranges=None):
        if ranges is not None:
            raise ranges_error(f"formula '{self.core.text}'")
        return self.core(*args, backend=backend, out=out)


generic_sum = make_generic(Genred, "Sum")
generic_logsumexp = make_generic(Genred, "LogSumExp")
generic_argmin = make_generic(Genred, "ArgMin")
generic_argkmin = make_generic(Genred, "ArgKMin")
from .kernels import Kernel, kernel_product  # noqa: E402 (needs Genred above)

LazyTensor, Vi, Vj, Pm = make_lazy_api("numpy")

__all__ = ["LazyTensor", "Vi", "Vj", "Pm", "Genred", "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin",
           "Kernel", "kernel_product"]
