"""The `be` fixture: each LazyTensor test runs on lazykeops.torch and lazykeops.numpy, and
on lazykeops.torch with CUDA tensors where a GPU is available (marked gpu)."""

import pytest
import torch

from lazy_helpers import Backend

CUDA = pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")])


@pytest.fixture(params=["torch", "numpy", CUDA])
def be(request):
    return Backend(request.param)
