"""`Kernel` and `kernel_product` for numpy arrays: the torch version's API on
lazykeops.numpy.Genred (no autograd). See docs/kernels.md."""

from ..kernels.modes import kernel_product_with
from ..kernels.language import Kernel
from . import Genred

__all__ = ["Kernel", "kernel_product"]


def kernel_product(params, x, y, *bs, mode=None, backend=None):
    """Kernel products a_i = sum_j k(x_i, y_j) b_j and their log-domain variants, on numpy
    arrays: the same arguments as lazykeops.torch.kernel_product, gamma a numpy array
    (or a Python float for a dim-1 gamma)."""
    return kernel_product_with(Genred, params, x, y, bs, mode, backend)
