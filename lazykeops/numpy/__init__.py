"""lazykeops for numpy arrays: pykeops.numpy's names, as lazykeops.torch has them for torch."""

from ..tensor.generic import make_generic
from ..tensor.lazy_api import complex_class, make_lazy_api
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
ComplexLazyTensor = complex_class(LazyTensor)
LazyTensor.Genred, LazyTensor.KernelSolve = Genred, KernelSolve  # as pykeops's class attributes

__all__ = ["LazyTensor", "ComplexLazyTensor", "Vi", "Vj", "Pm", "Genred", "KernelSolve",
           "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin", "Kernel",
           "kernel_product"]
