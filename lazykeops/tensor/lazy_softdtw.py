"""LazyTensor.softdtw_sqdist, pykeops's method for the SoftDTW_SqDist formula op
(lazykeops/formula/softdtw.py), attached to LazyTensor at import."""

from .lazy import LazyTensor


def softdtw_sqdist(self, other, gamma):
    """Soft-DTW between `self` and `other` seen as 1-D time series (lengths: their inner
    dimensions, which may differ), cost (x_k - y_l)^2, smoothing `gamma` (a positive
    number or a dimension-1 LazyTensor); a dimension-1 LazyTensor. Differentiable once
    with respect to self, other and gamma."""
    return self._apply("SoftDTW_SqDist", other, gamma)


LazyTensor.softdtw_sqdist = softdtw_sqdist
