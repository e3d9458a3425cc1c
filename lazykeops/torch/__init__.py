"""lazykeops for torch tensors: pykeops.torch's names (LazyTensor, ComplexLazyTensor, Vi, Vj, Pm,
Genred, KernelSolve, generic_*), plus kernel_product.

    from lazykeops.torch import Genred, generic_sum, generic_logsumexp

The seed's import lines `from lazykeops.torch.generic_sum import generic_sum` work too:
the function is defined in that submodule and bound here after it, so that the package
attribute is the function, not the module.
"""

from ..routines.generic import make_generic
from ..tensor.lazy_api import complex_class, make_lazy_api
from .genred import Genred
from .generic_logsumexp import generic_logsumexp
from .generic_sum import generic_sum
from .kernels import Kernel, kernel_product
from .kernel_solve import KernelSolve
from .lazy_dispatch import torch_function

generic_argmin = make_generic(Genred, "ArgMin")
generic_argkmin = make_generic(Genred, "ArgKMin")

LazyTensor, Vi, Vj, Pm = make_lazy_api("torch")
ComplexLazyTensor = complex_class(LazyTensor)
LazyTensor.Genred, LazyTensor.KernelSolve = Genred, KernelSolve  # as pykeops's class attributes
LazyTensor.__torch_function__ = classmethod(torch_function)  # `tensor @ LazyTensor` under compile

__all__ = ["LazyTensor", "ComplexLazyTensor", "Vi", "Vj", "Pm", "Genred", "KernelSolve",
           "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin", "Kernel",
           "kernel_product"]
