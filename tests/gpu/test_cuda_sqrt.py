"""float32 Sqrt and Rsqrt on the GPU use the hardware units (csrc/lk_math.h): special
values as torch (Rsqrt(0) = 0, pykeops's convention), subnormals included, and at most a
couple of ulps from the float64 result elsewhere. Skipped without a CUDA device (CI)."""

import pytest
import torch

from lazykeops.torch import Genred

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
REFERENCES = {"Sqrt": torch.sqrt,
              "Rsqrt": lambda v: torch.where(v == 0, torch.zeros_like(v), torch.rsqrt(v))}


@pytest.mark.parametrize("op", sorted(REFERENCES))
def test_hardware_square_roots(op):
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, float("inf"), float("nan"), -1.0, 1e-40, 3e-39])
    scales = 10.0 ** torch.randint(-37, 38, (100_000,), generator=g).float()
    normal = torch.rand(100_000, generator=g) * scales + torch.finfo(torch.float32).tiny
    routine = Genred(f"{op}(X)", ["X = Vi(1)", "Y = Vj(1)"], axis=1)
    zero = torch.zeros(1, 1, device="cuda")
    got_special = routine(special[:, None].cuda(), zero).cpu()[:, 0]
    want_special = REFERENCES[op](special.double()).float()
    assert torch.equal(got_special.isnan(), want_special.isnan())
    finite = ~want_special.isnan()
    assert torch.allclose(got_special[finite], want_special[finite], rtol=3e-7, atol=0)
    got = routine(normal[:, None].cuda(), zero).cpu()[:, 0].double()
    want = REFERENCES[op](normal.double())
    ulps = ((got - want).abs() / want.abs() / torch.finfo(torch.float32).eps).max().item()
    assert ulps <= 2, f"{op}: {ulps:.2f} ulps"
