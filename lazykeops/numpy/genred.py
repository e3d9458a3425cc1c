"""The numpy binding of the Genred core: pykeops.numpy.Genred (no autograd).

It is written against lazykeops.tensor only (GenredFront, shared with the torch Genred),
not against lazykeops.torch: importing anything from that package imports torch, which
lazykeops.numpy must not need. The arguments are the torch Genred's.
"""

from ..runtime.genred import GenredFront


class Genred(GenredFront):
    """A reduction of a string formula, callable on numpy arrays: the arguments, call
    keywords and output conventions of lazykeops.torch.Genred (pykeops 2.3's), without
    autograd. Index outputs are int64 arrays.
    """

    framework = "numpy"

    def __call__(self, *args, **options):
        if not options:
            return self.core(*args)
        return self.core(*args, **self._call_options(options))
