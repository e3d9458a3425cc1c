"""`from lazykeops.torch.kernels import Kernel, kernel_product`, as in the 2018 KeOps README.

kernel_product runs through lazykeops.torch.Genred, so the result is differentiable
(to any order) w.r.t. x, y, the extra arrays b and gamma. See docs/kernels.md.
"""

from ..kernels.modes import kernel_product_with
from ..kernels.language import Kernel
from .genred import Genred

__all__ = ["Kernel", "kernel_product"]


def kernel_product(params, x, y, *bs, mode=None, backend=None):
    """Kernel products a_i = sum_j k(x_i, y_j) b_j and their log-domain variants.

    params: {"id": Kernel("gaussian(x,y)"), "gamma": torch.tensor([1 / sigma**2])}, and
    optionally "mode" and "backend" (the keyword arguments take precedence). gamma is a
    dim-1 tensor (isotropic), a (D,) tensor (diagonal), a (D*D,) tensor (full metric), an
    (M, K) tensor (one gamma per y_j), or a tuple of those, one per kernel of the name.
    x, y: (N, D) and (M, D) tensors, or tuples of them, one per feature space (x, y),
    (u, v), ... in order of appearance in the kernel name.
    *bs: the mode's arrays, e.g. b of shape (M, E) for mode "sum" (the default).
    mode: sum, lse, log_scaled, log_scaled_lse, log_scaled_barycenter, lse_mult_i,
    sinkhorn_primal or sinkhorn_cost (definitions in docs/kernels.md).
    backend: "auto" or "CPU". Returns an (N, E) tensor.
    """
    return kernel_product_with(Genred, params, x, y, bs, mode, backend)
