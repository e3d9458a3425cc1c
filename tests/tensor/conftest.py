"""The `be` fixture: each LazyTensor test runs on lazykeops.torch and lazykeops.numpy."""

import pytest

from lazy_helpers import Backend


@pytest.fixture(params=["torch", "numpy"])
def be(request):
    return Backend(request.param)
