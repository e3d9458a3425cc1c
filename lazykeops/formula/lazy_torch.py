"""torch for the ops' reference implementations, imported when first used.

The references (the tests' ground truth, `LazyTensor.dense()`) are torch code, but the
formula package is also the front end of lazykeops.numpy, which must import and run
without torch. The family modules write `torch.where(...)` inside their references as
usual, with `torch` this stand-in: reading one of its attributes imports torch then, and
keeps the attribute, so later reads cost what a module attribute costs. Module-level
tables refer to tensor methods (`lambda x: x.exp()`), never to torch itself.
"""

import importlib


class _LazyTorch:
    def __getattr__(self, name):  # only called for attributes not kept yet
        value = getattr(importlib.import_module("torch"), name)
        setattr(self, name, value)
        return value


torch = _LazyTorch()
