"""The numpy binding of the Genred core: pykeops.numpy.Genred (no autograd).

It is written against lazykeops.tensor only, not as a subclass of lazykeops.torch's
Genred: importing anything from lazykeops.torch imports that package, and with it torch,
which lazykeops.numpy must not need. The arguments are the torch Genred's.
"""

from ..tensor.genred import GenredCore, parse_genred
from ..tensor.options import GENRED_CALL_KEYWORDS, GENRED_INIT_KEYWORDS, \
    bind_positional, split_reduction_options

# pykeops's Genred.__init__ positional arguments after cuda_type.
_MORE = ("dtype_acc", "use_double_acc", "sum_scheme", "enable_chunks", "rec_multVar_highdim",
         "use_fast_math")


class Genred:
    """A reduction of a string formula, callable on numpy arrays.

    Genred(formula, aliases, reduction_op="Sum", axis=0, dtype=None, opt_arg=None,
           formula2=None, cuda_type=None, dtype_acc="auto", use_double_acc=False,
           sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=False,
           use_fast_math=True)(*args, backend="auto", device_id=-1, ranges=None, out=None)

    As in pykeops 2.3: axis=0 reduces over i (the output is indexed by j), axis=1 reduces
    over j (the output is indexed by i); the other arguments are lazykeops.torch.Genred's
    (see its docstring). Index outputs are int64 arrays.
    """

    framework = "numpy"

    def __init__(self, formula, aliases, reduction_op="Sum", axis=0, dtype=None,
                 opt_arg=None, formula2=None, cuda_type=None, *more, **options):
        formulas, aliases, text = parse_genred(formula, aliases, formula2)
        what = f"Genred of formula '{text}'"
        options = bind_positional(_MORE, more, options, what)
        init, _ = split_reduction_options({**options, "dtype": dtype, "cuda_type": cuda_type},
                                          what, accepted=GENRED_INIT_KEYWORDS)
        self.core = GenredCore(formulas, aliases, reduction_op, axis, opt_arg,
                               framework=self.framework, text=text, **init)

    def __call__(self, *args, **options):
        if not options:
            return self.core(*args)
        _, opts = split_reduction_options(options, f"Genred of formula '{self.core.text}'",
                                          accepted=GENRED_CALL_KEYWORDS)
        return self.core(*args, **opts)
