"""lazykeops for numpy arrays: pykeops.numpy's names, as lazykeops.torch has them for torch.

Nothing here imports torch (nor lazykeops.torch): see numpy/genred.py.
"""

from ..routines.generic import make_generic
from ..tensor.lazy_api import complex_class, make_lazy_api
from .genred import Genred

generic_sum = make_generic(Genred, "Sum")
generic_logsumexp = make_generic(Genred, "LogSumExp")
generic_argmin = make_generic(Genred, "ArgMin")
generic_argkmin = make_generic(Genred, "ArgKMin")
from .kernels import Kernel, kernel_product  # noqa: E402 (needs Genred above)
from ..routines.kernel_solve import KernelSolve  # noqa: E402

LazyTensor, Vi, Vj, Pm = make_lazy_api("numpy")
ComplexLazyTensor = complex_class(LazyTensor)
LazyTensor.Genred, LazyTensor.KernelSolve = Genred, KernelSolve  # as pykeops's class attributes

__all__ = ["LazyTensor", "ComplexLazyTensor", "Vi", "Vj", "Pm", "Genred", "KernelSolve",
           "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin", "Kernel",
           "kernel_product"]
