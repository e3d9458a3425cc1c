"""LazyTensor construction and attributes: i-, j- and parameter variables from arrays of
every accepted layout, Python numbers and lists, Vi/Vj/Pm (with data or symbolic),
.shape/.ndim/.dtype/.nbatchdims/str(), and non-contiguous inputs.

Most checks here build LazyTensors without reducing them (nothing compiles); the few
reductions reuse one Gaussian-kernel formula exp(-g |x_i - y_j|^2) b_j.
"""

import numpy as np
import torch

from lazy_helpers import D, M, N, check, check_index, no_compile, normal, sqdist_dense, uniform


def gauss_dense(g, x, y, b):
    return torch.exp(-g * sqdist_dense(x, y)) @ b


def gauss_inputs():
    return (torch.tensor([0.7], dtype=torch.float64), uniform(N, D, seed=51),
            uniform(M, D, seed=52), normal(M, 2, seed=53))


# ----------------------------------------------------------------------- categories
def test_three_d_layouts_give_i_j_and_parameter_variables(be):
    x, y, p = uniform(N, D), uniform(M, D), uniform(D)
    X = be.LazyTensor(be.arr(x)[:, None, :])
    Y = be.LazyTensor(be.arr(y)[None, :, :])
    P = be.LazyTensor(be.arr(p)[None, None, :])
    assert (X.shape, Y.shape, P.shape) == ((N, 1, D), (1, M, D), (1, 1, D))
    assert (X.ndim, Y.ndim, P.ndim) == (D, D, D)
    assert (X.nbatchdims, Y.nbatchdims, P.nbatchdims) == (0, 0, 0)
    assert str(X).count("Var(0,3,0)") == 1 and "Var(0,3,1)" in str(Y) and \
        "Var(0,3,2)" in str(P)
    assert (X - Y).shape == (N, M, D) and (X * P).shape == (N, 1, D)


def test_two_d_arrays_with_axis_and_vi_vj_helpers(be):
    x, y = uniform(N, D), uniform(M, D)
    X0, X1 = be.LazyTensor(be.arr(x), axis=0), be.LazyTensor(be.arr(x), axis=1)
    assert X0.shape == (N, 1, D) and X1.shape == (1, N, D)
    assert "Var(0,3,0)" in str(X0) and "Var(0,3,1)" in str(X1)
    assert be.Vi(be.arr(x)).shape == (N, 1, D) and be.Vj(be.arr(y)).shape == (1, M, D)
    assert (be.Vi(be.arr(x)) - be.Vj(be.arr(y))).shape == (N, M, D)


def test_parameters_from_small_arrays_numbers_and_lists(be):
    zero_d = be.LazyTensor(be.arr(torch.tensor(0.5, dtype=torch.float64)))
    one_d = be.LazyTensor(be.arr(uniform(D)))
    assert zero_d.shape == (1, 1) and zero_d.ndim == 1 and "Var(0,1,2)" in str(zero_d)
    assert one_d.shape == (1, 1, D) and one_d.ndim == D and "Var(0,3,2)" in str(one_d)
    assert be.Pm(be.arr(uniform(D))).shape == (1, 1, D)
    assert be.Pm(0.5).shape == (1, 1) and "Var(0,1,2)" in str(be.Pm(0.5))
    number = be.LazyTensor(2.5)
    assert number.shape == (1, 1) and number.ndim == 1 and "Var(0,1,2)" in str(number)
    listed = be.LazyTensor([1.0, 2.0, 3.0])
    assert listed.shape == (1, 1, 3) and listed.ndim == 3 and "Var(0,3,2)" in str(listed)


def test_python_ints_are_integer_constants(be):
    three = be.LazyTensor(3)
    assert "IntCst(3)" in str(three) and three.ndim == 1
    X = be.Vi(be.arr(uniform(N, D)))
    assert "IntCst(2)" in str(X * 2) and "IntCst(2)" in str(2 + X)
    assert "Var(1" not in str(X * 2)  # not a second variable
    assert "Var(1,1,2)" in str(X * 2.0)  # a float is a parameter


def test_values_of_numbers_lists_and_parameters(be):
    """One formula, four ways to give its parameter g: float, list, 0-D and 1-D array."""
    g, x, y, b = gauss_inputs()
    want = gauss_dense(0.7, x, y, b)
    for G in (be.Pm(0.7), be.LazyTensor([0.7]), be.LazyTensor(be.arr(g[0])),
              be.LazyTensor(be.arr(g))):
        lazy = (-G * be.Vi(be.arr(x)).sqdist(be.Vj(be.arr(y)))).exp() * be.Vj(be.arr(b))
        check(be, lazy.sum(dim=1), want)


def test_attributes_and_str(be):
    x = uniform(2, 1, N, 1, D)
    y = uniform(1, 3, 1, M, D)
    X, Y = be.LazyTensor(be.arr(x)), be.LazyTensor(be.arr(y))
    K = (-(X - Y).sqnorm2()).exp()
    assert K.shape == (2, 3, N, M) and K.ndim == 1 and K.nbatchdims == 2
    assert X.shape == (2, 1, N, 1, D) and Y.shape == (1, 3, 1, M, D)
    assert K.dtype == "float64" and be.Vi(be.arr(uniform(N, D), torch.float32)).dtype == \
        "float32"
    text = str(K)
    assert "Exp" in text and "SqNorm2" in text and "Var(0,3,0)" in text and \
        "Var(1,3,1)" in text and str((2, 3, N, M)) in text
    assert repr(K) == text


def test_several_batch_dims_broadcast_in_shape(be):
    x = uniform(4, 1, 2, N, 1, D)
    y = uniform(3, 1, 1, M, D)
    p = uniform(1, 1, 1, 1, 1)
    Z = be.LazyTensor(be.arr(x)) - be.LazyTensor(be.arr(y)) * be.LazyTensor(be.arr(p))
    assert Z.shape == (4, 3, 2, N, M, D) and Z.nbatchdims == 3
    check(be, Z.sum(dim=4), (x - y * p).sum(4))


# ----------------------------------------------------------------------- symbolic
def test_symbolic_variables_give_a_callable_reduction(be):
    Vi, Vj, Pm = be.Vi, be.Vj, be.Pm
    lazy = (-Pm(2, 1) * Vi(0, 3).sqdist(Vj(1, 3))).exp() * Vj(3, 2)
    assert lazy.ndim == 2
    reduction = lazy.sum(dim=1)
    assert callable(reduction) and not isinstance(reduction, be.array_type)
    g, x, y, b = gauss_inputs()
    check(be, reduction(be.arr(x), be.arr(y), be.arr(g), be.arr(b)), gauss_dense(g, x, y, b))
    # called again with other data, and with a Python float for the parameter
    x2 = uniform(N + 2, D, seed=99)
    check(be, reduction(be.arr(x2), be.arr(y), 0.7, be.arr(b)), gauss_dense(g, x2, y, b))


def test_symbolic_argkmin_and_reduction_over_i(be):
    Vi, Vj = be.Vi, be.Vj
    x, y = uniform(N, D, seed=54), uniform(M, D, seed=55)
    knn = Vi(0, 3).sqdist(Vj(1, 3)).argKmin(2, dim=1)
    check_index(be, knn(be.arr(x), be.arr(y)),
                torch.topk(sqdist_dense(x, y), 2, dim=1, largest=False).indices)
    lse = (Vi(0, 3) | Vj(1, 3)).logsumexp(dim=0)
    check(be, lse(be.arr(x), be.arr(y)), torch.logsumexp(x @ y.T, dim=0)[:, None])


def test_symbolic_and_data_variables_do_not_mix(be):
    x = be.arr(uniform(N, D))
    no_compile(lambda: (be.Vi(0, 3) - be.Vj(x)).sum(dim=1), "symbolic")


# ----------------------------------------------------------------------- layouts
def test_non_contiguous_inputs(be):
    """Transposed and strided views as i-, j- and parameter variables."""
    g, x, y, b = gauss_inputs()
    xt = be.arr(x.T.contiguous()).T                      # transposed view (N, D)
    yb = be.arr(torch.stack([y, y + 10], 1))[:, 0, :]    # strided view (M, D)
    bt = be.arr(b.T.contiguous()).T                      # transposed view (M, 2)
    gs = be.arr(torch.tensor([0.7, 5.0], dtype=torch.float64))[::2]   # strided (1,)
    for v in (xt, yb, bt):
        if be.name != "numpy":
            assert not v.is_contiguous()
        else:
            assert not v.flags["C_CONTIGUOUS"]
    lazy = (-be.Pm(gs) * be.Vi(xt).sqdist(be.Vj(yb))).exp() * be.Vj(bt)
    check(be, lazy.sum(dim=1), gauss_dense(g, x, y, b))
    # the same formula through 3-D views
    lazy = (-be.Pm(gs) * be.LazyTensor(xt[:, None, :]).sqdist(be.LazyTensor(yb[None]))).exp() \
        * be.LazyTensor(bt[None])
    check(be, lazy.sum(dim=1), gauss_dense(g, x, y, b))


def test_non_contiguous_batched_inputs(be):
    x = uniform(N, 2, D, seed=61)                        # batch axis in the middle
    y = uniform(M, 2, D, seed=62)
    xv = be.arr(x).transpose(1, 0, 2) if be.name == "numpy" else be.arr(x).transpose(0, 1)
    yv = be.arr(y).transpose(1, 0, 2) if be.name == "numpy" else be.arr(y).transpose(0, 1)
    X, Y = be.LazyTensor(xv[:, :, None, :]), be.LazyTensor(yv[:, None, :, :])
    assert X.shape == (2, N, 1, D) and Y.shape == (2, 1, M, D)
    xd, yd = x.transpose(0, 1), y.transpose(0, 1)
    check(be, (X - Y).sum(dim=2), (xd[:, :, None] - yd[:, None]).sum(2))


def test_float32_inputs_reduce_in_float32(be):
    x, y = uniform(N, D, seed=63), uniform(M, D, seed=64)
    X, Y = be.Vi(be.arr(x, torch.float32)), be.Vj(be.arr(y, torch.float32))
    assert (X - Y).dtype == "float32"
    check(be, (X - Y).sum(dim=1), (x[:, None] - y[None]).sum(1), tol=1e-5,
          dtype=torch.float32)


# ----------------------------------------------------------------------- pykeops compat
def test_axis_with_a_three_d_array_is_refused(be):
    x = be.arr(uniform(1, N, D))
    no_compile(lambda: be.Vi(x), "axis")


def test_axis_with_a_one_d_array_is_refused(be):
    x = be.arr(uniform(N))
    no_compile(lambda: be.Vi(x), "axis")


def test_reduction_without_j_variables_as_pykeops(be):
    x = uniform(N, D)
    X = be.LazyTensor(be.arr(x)[:, None, :])
    check(be, (X * 2.0).sum(dim=0), 2.0 * x.sum(0, keepdim=True))
    check(be, (X * 2.0).sum(dim=1), 2.0 * x)


def test_numpy_float64_scalar_with_float32_arrays():
    from lazy_helpers import Backend

    be = Backend("numpy")
    x, y = uniform(N, D), uniform(M, D)
    X, Y = be.Vi(be.arr(x, torch.float32)), be.Vj(be.arr(y, torch.float32))
    check(be, ((X - Y) * np.float64(2.0)).sum(dim=1), 2 * (x[:, None] - y[None]).sum(1),
          tol=1e-5, dtype=torch.float32)
