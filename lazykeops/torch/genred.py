"""The torch binding of the Genred core."""

from ..errors import ranges_error
from ..tensor.autograd import call
from ..tensor.genred import GenredCore, parse_genred


class Genred:
    """A reduction of a string formula, callable on torch tensors.

    Genred(formula, aliases, reduction_op="Sum", axis=0, opt_arg=None, formula2=None,
           dtype_acc="auto", sum_scheme="auto")(*args, backend="auto", out=None)

    As in pykeops 2.3: axis=0 reduces over i (the output is indexed by j), axis=1 reduces
    over j (the output is indexed by i). opt_arg is K for KMin/ArgKMin/KMin_ArgKMin;
    formula2 is the weight of LogSumExp and SumSoftMaxWeight. Index outputs are int64;
    Min_ArgMin, Max_ArgMax and KMin_ArgKMin return (values, indices). Block-sparse
    `ranges` are not supported yet: passing them raises rather than being ignored.
    """

    framework = "torch"

    def __init__(self, formula, aliases, reduction_op="Sum", axis=0, opt_arg=None,
                 formula2=None, dtype_acc="auto", sum_scheme="auto"):
        formulas, aliases, text = parse_genred(formula, aliases, formula2)
        self.core = GenredCore(formulas, aliases, reduction_op, axis, opt_arg, dtype_acc,
                               sum_scheme, framework=self.framework, text=text)

    def __call__(self, *args, backend="auto", out=None, ranges=None):
        if ranges is not None:
            raise ranges_error(f"formula '{self.core.text}'")
        return call(self.core, args, backend=backend, out=out)
