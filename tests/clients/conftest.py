"""The `pykeops` fixture: lazykeops installed as pykeops for one test module, then taken away
again, so that no other test sees a `pykeops` module.

Client libraries bind pykeops's names when they are first imported (GeomLoss and GPyTorch
fall back to their plain paths, silently, when `import pykeops` fails), so each client
test module imports its library inside the fixture, after the installation, and checks
that the library saw lazykeops rather than its fallback."""

import pytest

import lazykeops
from lazykeops.compat.pykeops_modules import uninstall


@pytest.fixture(scope="module")
def pykeops():
    module = lazykeops.install_as_pykeops()
    yield module
    uninstall()
