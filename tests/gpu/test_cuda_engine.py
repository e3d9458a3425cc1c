"""The CUDA engine against the CPU engine and dense torch: every op of the registry
(values, and gradcheck of its gradients on the GPU), every reduction over both axes,
gradients of every reduction (gradcheck on the GPU), LazyTensors, batch dims, placement
and device errors. Skipped where no CUDA device is available (CI)."""

import pytest
import torch

from lazykeops import LazyKeOpsError
from lazykeops.formula import OPS, make, var
from lazykeops.torch import Genred, LazyTensor
from tests.autograd.test_op_gradcheck import DIFFERENTIABLE, routine_and_inputs
from tests.autograd.test_reduction_grads import SELECTIONS, SUM_LIKE, values_of
from tests.engine.test_reductions import CASES, _ids, check_reduction
from tests.formula.op_samples import CASES as OP_CASES
from tests.formula.op_samples import case_id, categories, sample

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA = "cuda"


@pytest.mark.parametrize("index", range(len(OP_CASES)), ids=[case_id(c) for c in OP_CASES])
def test_every_op_matches_the_cpu_engine(index):
    name, dims, params = OP_CASES[index]
    spec = OPS[name]
    cats = categories(spec.arity, shift=index)
    g = torch.Generator().manual_seed(index)
    nodes = [var(k, d, c) for k, (d, c) in enumerate(zip(dims, cats))]
    args = [sample(dom, c, d, g, 7, 5) for dom, c, d in zip(spec.domain, cats, dims)]
    aliases = [f"a{k} = Var({k},{d},{c})" for k, (d, c) in enumerate(zip(dims, cats))]
    for c, n in ((0, 7), (1, 5)):
        if c not in cats:
            aliases.append(f"a{len(aliases)} = Var({len(aliases)},1,{c})")
            args.append(torch.rand(n, 1, dtype=torch.float64))
    routine = Genred(str(make(name, *nodes, params=params)), aliases, axis=1)
    on_gpu = routine(*[a.to(CUDA) for a in args])
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), routine(*args), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("index", range(len(DIFFERENTIABLE)),
                         ids=[case_id(c) for c in DIFFERENTIABLE])
def test_every_op_gradcheck_on_the_gpu(index):
    routine, args = routine_and_inputs(DIFFERENTIABLE[index], index)
    args = [a.detach().to(CUDA).requires_grad_(a.requires_grad) for a in args]
    assert torch.autograd.gradcheck(routine, args)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_every_reduction_matches_dense_torch(case, axis):
    check_reduction(case, axis, CUDA)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("case", SUM_LIKE + SELECTIONS, ids=_ids)
def test_gradients_on_the_gpu(case, axis):
    red, formula, formula2, k = case
    routine = Genred(formula, ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)"],
                     reduction_op=red, axis=axis, formula2=formula2, opt_arg=k)
    torch.manual_seed(0)
    args = [torch.randn(*s, dtype=torch.float64, device=CUDA, requires_grad=True)
            for s in ((6, 3), (5, 3), (5, 2), (1,))]
    assert torch.autograd.gradcheck(values_of(routine), args)


def test_float32_gaussian_conv_and_lazytensor_on_the_gpu():
    torch.manual_seed(0)
    x = torch.rand(3000, 3, device=CUDA)
    y = torch.rand(2000, 3, device=CUDA)
    b = torch.randn(2000, 2, device=CUDA)
    K = (-((LazyTensor(x[:, None]) - LazyTensor(y[None])) ** 2).sum(-1) * 4.0).exp()
    got = K @ b
    want = torch.exp(-4 * torch.cdist(x.double(), y.double()) ** 2) @ b.double()
    assert got.is_cuda and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    idx = ((LazyTensor(x[:, None]) - LazyTensor(y[None])) ** 2).sum(-1).argKmin(5, dim=1)
    assert torch.equal(idx, torch.cdist(x.double(), y.double()).topk(5, 1, largest=False).indices)


def test_batch_dimensions_on_the_gpu():
    x = torch.randn(3, 40, 3, dtype=torch.float64, device=CUDA)
    y = torch.randn(30, 3, dtype=torch.float64, device=CUDA)
    b = torch.randn(3, 30, 2, dtype=torch.float64, device=CUDA)
    got = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)(x, y, b)
    want = torch.exp(-torch.cdist(x, y.expand(3, -1, -1)) ** 2) @ b
    torch.testing.assert_close(got, want)


def test_mixing_devices_is_an_error():
    with pytest.raises(LazyKeOpsError, match="device"):
        Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], axis=1)(
            torch.zeros(4, 3, device=CUDA), torch.zeros(5, 3))


def test_cuda_tensors_without_the_compiler_asked_for_are_a_clear_error(monkeypatch):
    from lazykeops.compile import build

    monkeypatch.setenv("LAZYKEOPS_CUDA_COMPILER", "nvcc")
    monkeypatch.setattr(build, "nvcc_available", lambda: False)
    x = torch.zeros(4, 3, device=CUDA)
    with pytest.raises(LazyKeOpsError, match="LAZYKEOPS_CUDA_COMPILER=nvcc, but no nvcc"):
        Genred("SqDist(X,Y)", ["X = Vi(3)", "Y = Vj(3)"], axis=1)(x, x)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_tensors_on_a_second_gpu_run_there_on_its_current_stream():
    x = torch.rand(3000, 3, device="cuda:1", dtype=torch.float64)
    y = torch.rand(2000, 3, device="cuda:1", dtype=torch.float64)
    b = torch.randn(2000, 2, device="cuda:1", dtype=torch.float64)
    routine = Genred("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)
    want = torch.exp(-torch.cdist(x, y) ** 2) @ b
    with torch.cuda.device(0):  # another device current: the data's device still runs it
        for backend in ("auto", "GPU_1D", "GPU_2D"):
            got = routine(x, y, b, backend=backend)
            assert got.device == torch.device("cuda:1")
            torch.testing.assert_close(got, want)
    stream = torch.cuda.Stream(device="cuda:1")
    with torch.cuda.stream(stream):  # the launch goes to the current stream of cuda:1
        got = routine(x, y, b)
    stream.synchronize()
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("b_category", ["Vj", "Vi", "Pm"])
def test_narrow_variables_inside_a_chunked_sum(b_category):
    """A dim-1 variable inside a sum over wide variables: the chunk functions read it
    (for a j-variable they once got a null pointer: an illegal address on the GPU)."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(50, 200, generator=g), torch.randn(70, 200, generator=g)
    b = {"Vj": torch.rand(70, 1, generator=g), "Vi": torch.rand(50, 1, generator=g),
         "Pm": torch.rand(1, generator=g)}[b_category]
    routine = Genred("SqNorm2((x-y)*b)", ["x=Vi(200)", "y=Vj(200)", f"b={b_category}(1)"],
                     reduction_op="Sum", axis=1)
    bb = b[None, :, :] if b_category == "Vj" else b[:, None, :] if b_category == "Vi" else b
    dense = (((x[:, None, :] - y[None, :, :]).double() * bb.double()) ** 2).sum(-1).sum(1)
    on_gpu = routine(x.to(CUDA), y.to(CUDA), b.to(CUDA))
    torch.testing.assert_close(on_gpu.cpu().double().view(-1), dense, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(routine(x, y, b).double().view(-1), dense, rtol=1e-5, atol=1e-3)


def test_weighted_distances_and_norms_of_wide_variables_are_chunked_sums():
    # chunking.as_sums: WeightedSqDist (diagonal, scalar weights) and Norm2 over D = 200 on
    # the CUDA cores' chunked path (float64: no tensor cores), against float64 references.
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(300, 200, generator=g) / 10, torch.rand(400, 200, generator=g) / 10
    b, w = torch.randn(400, 2, generator=g), torch.rand(200, generator=g) - 0.2
    x, y, b, w = (t.double() for t in (x, y, b, w))
    aliases = ["X = Vi(200)", "Y = Vj(200)", "B = Vj(2)", "W = Pm(200)", "G = Pm(1)"]
    gain = torch.tensor([0.7], dtype=torch.float64)
    diff2 = (x[:, None] - y[None]) ** 2
    for formula, k in [("Exp(-WeightedSqDist(W,X,Y)) * B", torch.exp(-(diff2 * w).sum(-1))),
                       ("Exp(-WeightedSqDist(G,X,Y)) * B", torch.exp(-0.7 * diff2.sum(-1))),
                       ("Exp(-Norm2(X-Y)) * B", torch.exp(-diff2.sum(-1).sqrt()))]:
        got = Genred(formula, aliases, axis=1)(*[t.to(CUDA) for t in (x, y, b, w, gain)])
        torch.testing.assert_close(got.cpu(), k @ b, rtol=1e-10, atol=1e-10, msg=formula)
