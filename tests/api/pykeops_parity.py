"""The same pykeops programs, run on the real pykeops and on lazykeops (through
install_as_pykeops): prints one JSON line, case name -> result (nested lists of float64
values, shapes and attributes) or the error's type. tests/api/test_pykeops_table.py runs it
with both libraries when LAZYKEOPS_PYKEOPS_PYTHON names a Python with the real pykeops.

    python tests/api/pykeops_parity.py lazykeops|pykeops
"""

import json
import sys
import warnings


def cases(torch, pk):
    """name -> function of no argument, each a small pykeops program."""
    LT, Vi, Vj, Pm = pk.LazyTensor, pk.Vi, pk.Vj, pk.Pm
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    x, y, b, p = rand(6, 3), rand(5, 3), rand(5, 2), rand(3)
    xb, yb = rand(2, 6, 1, 3), rand(2, 1, 5, 3)
    X, Y, B, P = LT(x[:, None]), LT(y[None]), LT(b[None]), LT(p)
    K = (-X.sqdist(Y)).exp()
    return {
        "attributes": lambda: [K.shape, K._shape, K.ndim, K.nbatchdims, X.axis, Y.axis,
                               K.dim(), LT(xb).shape, (LT(xb) - LT(yb)).shape],
        "symbolic tuple": lambda: (LT((0, 3, 0)) - LT((1, 3, 1))).sqnorm2().sum(dim=1)(x, y),
        "Vi/Vj/Pm data": lambda: ((Vi(x) - Vj(y)) ** 2 * Pm(p)).sum(-1).sum(dim=0),
        "sum over i and j": lambda: [K.sum(dim=0), K.sum(dim=1), K.sum(0), K.sum(1)],
        "matmul": lambda: K @ b,
        "inner sum, elem, extract, []": lambda: [(X * Y).sum(-1).sum(1), X.elem(1).sum(1),
                                                X.extract(1, 2).sum(1), X[1:].sum(1),
                                                X[2].sum(1)],
        "elementwise maths": lambda: [f(X - Y).sum(-1).sum(1) for f in (
            lambda t: t.abs(), lambda t: t.exp(), lambda t: t.sin(), lambda t: t.cos(),
            lambda t: t.sign(), lambda t: t.step(), lambda t: t.relu(), lambda t: t.square(),
            lambda t: t.atan(), lambda t: (t ** 3), lambda t: (t ** 0.5).abs(),
            lambda t: t.sinxdivx(), lambda t: t.clamp(-0.2, 0.3), lambda t: t.round(1),
            lambda t: t.mod(0.3, 0.1), lambda t: t.atan2(X + 1), lambda t: t.ifelse(X, Y),
            lambda t: (t.abs() + 0.5).log(), lambda t: (t.abs() + 0.5).sqrt(),
            lambda t: (t.abs() + 0.5).rsqrt(), lambda t: (t.abs() + 0.5).xlogx(),
            lambda t: (t / 2).asin(), lambda t: (t / 2).acos(), lambda t: t.sinc(),
            lambda t: 1 / (t.abs() + 1), lambda t: 2 - t, lambda t: t.power(2))],
        "vector ops": lambda: [X.norm2().sum(1), X.normalize().sum(-1).sum(1),
                               X.sqnorm2().sum(1), (X | Y).sum(1), X.weightedsqnorm(P).sum(1),
                               X.weightedsqdist(Y, P).sum(1), X.concat(Y).sum(-1).sum(1),
                               (X.elem(0) * 2).one_hot(3).sum(-1).sum(1),
                               X.tensorprod(Y).sum(-1).sum(1),
                               X.keops_kron(Y, [3], [3]).sum(-1).sum(1),
                               LT.cat((X, Y), -1).sum(-1).sum(1),
                               LT.concatenate((X, Y)).sum(-1).sum(1)],
        "matvec": lambda: [LT(rand(9)).matvecmult(X).sum(-1).sum(1),
                           X.vecmatmult(LT(rand(9))).sum(-1).sum(1)],
        "selections": lambda: [K.min(dim=1), K.max(dim=1), K.argmin(dim=1).float(),
                               K.argmax(dim=0).float(), K.Kmin(2, dim=1),
                               K.argKmin(2, dim=1).float(), K.min_argmin(dim=1)[0],
                               K.Kmin_argKmin(K=2, dim=1)[1].float(),
                               (X - Y).Kmin(2, dim=1), (X - Y).argKmin(2, dim=1).float(),
                               (X - Y).min(dim=1), (X - Y).argmin(dim=1).float()],
        "inner min/max": lambda: [(X - Y).min(-1).sum(1), (X - Y).max(-1).sum(1),
                                  (X - Y).argmin(-1).sum(1), (X - Y).argmax(-1).sum(1)],
        "logsumexp": lambda: [K.logsumexp(dim=1), K.logsumexp(dim=0),
                              K.logsumexp(dim=1, weight=LT(b[None, :, :1])),
                              K.sumsoftmaxweight(B, dim=1)],
        "batch dims": lambda: [(-(LT(xb) - LT(yb)).sqnorm2()).exp().sum(dim=2),
                               (-(LT(xb) - LT(yb)).sqnorm2()).exp().sum(dim=1),
                               (-(LT(xb) - LT(yb)).sqnorm2()).logsumexp(2),
                               (-(LT(xb) - LT(yb)).sqnorm2()).argKmin(2, dim=2).float()],
        "keywords": lambda: [K.sum(dim=1, backend="CPU"), K.__matmul__(b, sum_scheme="kahan_scheme"),
                             K.sum(dim=1, use_double_acc=True), K.sum(1, enable_chunks=False)],
        "grad, diff": lambda: [K.grad(X, LT(rand(6, 1)[:, None])).sum(dim=1),
                               K.diff(X, LT(rand(6, 3)[:, None])).sum(dim=1)],
        "autograd": lambda: _autograd(torch, LT, x, y, b),
        "solve": lambda: (-LT(x[:, None]).sqdist(LT(x[None]))).exp().solve(
            LT(rand(6, 2)[:, None]), alpha=0.5),
        "Genred string": lambda: pk.Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)",
                                                                     "B = Vj(2)"], axis=1)(x, y, b),
        "Genred reductions": lambda: [pk.Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"],
                                                reduction_op=r, axis=1, **o)(x, y)
                                      for r, o in (("Min", {}), ("ArgKMin", {"opt_arg": 3}),
                                                   ("LogSumExp", {}), ("Max_ArgMax", {}))],
        "Kron and TensorDot strings": lambda: [
            pk.Genred("Kron(X, Y, [3], [3])", ["X = Vi(3)", "Y = Vj(3)"], axis=1)(x, y),
            pk.Genred("TensorDot(X, Y, [3], [3], [0], [0])", ["X = Vi(3)", "Y = Vj(3)"],
                      axis=1)(x, y)],
        "generic helpers": lambda: [pk.generic_sum("Exp(-SqDist(X,Y))", "A = Vi(1)", "X = Vi(3)",
                                                   "Y = Vj(3)")(x, y),
                                    pk.generic_logsumexp("-SqDist(X,Y)", "A = Vi(1)", "X = Vi(3)",
                                                         "Y = Vj(3)")(x, y),
                                    pk.generic_argkmin("SqDist(X,Y)", "A = Vi(2)", "X = Vi(3)",
                                                       "Y = Vj(3)")(x, y).double()],
        "KernelSolve": lambda: pk.KernelSolve("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)",
                                                                      "B = Vj(2)"], "B", axis=1)(
            x, x, rand(6, 2), alpha=0.5, eps=1e-12),
        "complex": lambda: _complex(torch, pk, x, y, rand),
        "cluster": lambda: _cluster(torch, rand),
    }


def _autograd(torch, LT, x, y, b):
    x, y, b = (t.clone().requires_grad_() for t in (x, y, b))
    out = ((-LT(x[:, None]).sqdist(LT(y[None]))).exp() * LT(b[None])).sum(dim=1)
    return list(torch.autograd.grad((out ** 2).sum(), [x, y, b]))


def _complex(torch, pk, x, y, rand):
    LT = pk.LazyTensor
    z = torch.complex(rand(5, 2), rand(5, 2))
    Z, X, Y = LT(z[None]), LT(x[:, None]), LT(y[None])
    phase = ((X - Y).sum(-1)).exp1j()
    out = [(phase * Z).sum(dim=1), (phase * Z).real.sum(dim=1), (phase * Z).imag.sum(dim=1),
           (phase * Z).conj().sum(dim=1), Z.angle().sum(dim=1), abs(Z).sum(dim=1),
           Z.exp().sum(dim=1), (Z * Z).sum(dim=1), (Z / (Z * Z + Z)).sum(dim=1),
           (phase * Z).sum(-1).sum(dim=1), X.imag2complex().sum(dim=1)]
    return [torch.view_as_real(o) if o.is_complex() else o for o in out]


def _cluster(torch, rand):
    from pykeops.torch.cluster import (cluster_ranges_centroids, from_matrix, grid_cluster,
                                       sort_clusters, swap_axes)

    pts = rand(200, 2)
    lab = grid_cluster(pts, 0.25)
    ranges, centroids, weights = cluster_ranges_centroids(pts, lab)
    _, lab_sorted = sort_clusters(pts, lab)
    keep = (centroids[:, None, :] - centroids[None]).norm(dim=2) < 0.4
    six = from_matrix(ranges, ranges, keep)
    return [lab.double(), ranges.double(), centroids, weights.double(), lab_sorted.double(),
            [t.double() for t in six], [t.double() for t in swap_axes(six)]]


def as_json(value):
    if hasattr(value, "tolist"):
        return {"shape": list(value.shape), "values": value.double().tolist()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    return value


def main(library):
    warnings.filterwarnings("ignore")
    if library == "lazykeops":
        import lazykeops

        lazykeops.install_as_pykeops()
    import pykeops.torch as pk
    import torch

    results = {}
    for name, case in cases(torch, pk).items():
        try:
            results[name] = as_json(case())
        except Exception as err:  # the comparison reports which side raised what
            results[name] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
