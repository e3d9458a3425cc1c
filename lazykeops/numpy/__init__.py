"""lazykeops for numpy arrays: the same Genred and generic_* helpers as lazykeops.torch."""

from ..tensor.generic import make_generic
from ..tensor.lazy_api import make_lazy_api
from ..torch.genred import Genred as _TorchGenred


class Genred(_TorchGenred):
    __doc__ = _TorchGenred.__doc__.replace("torch tensors", "numpy arrays")
    framework = "numpy"

    def __call__(self, *args, **options):
        if not options:
            return self.core(*args)
        return self.core(*args, **self._call_options(options))


generic_sum = make_generic(Genred, "Sum")
generic_logsumexp = make_generic(Genred, "LogSumExp")
generic_argmin = make_generic(Genred, "ArgMin")
generic_argkmin = make_generic(Genred, "ArgKMin")
from .kernels import Kernel, kernel_product  # noqa: E402 (needs Genred above)
from ..tensor.kernel_solve import KernelSolve  # noqa: E402

LazyTensor, Vi, Vj, Pm = make_lazy_api("numpy")
from ..tensor.lazy_api import complex_class  # noqa: E402
ComplexLazyTensor = complex_class(LazyTensor)

__all__ = ["LazyTensor", "Vi", "Vj", "Pm", "Genred", "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin",
           "Kernel", "kernel_product"]
__all__ += ["KernelSolve"]
__all__ += ["ComplexLazyTensor"]
