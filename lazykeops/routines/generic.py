"""The seed's string API on top of Genred: generic_sum, generic_logsumexp, generic_argmin
and generic_argkmin. The second string names the output and its category, which picks the
reduced axis: an i-indexed output ("A = Vi(2)", or the seed's "A = Vx(2)") is a
reduction over j. As in pykeops, generic_argkmin takes K from the output's dim
("A = Vi(3)": the 3 nearest), unless opt_arg is given. Other keywords are Genred's
(pykeops's dtype_acc, sum_scheme, ...: see runtime/options.py); the routine's call takes
pykeops's backend, device_id, ranges and out.
"""

from ..errors import LazyKeOpsError
from ..formula import CAT_I, CAT_J
from ..formula.aliases import parse_output_alias
from ..formula.reductions import lookup

_FIXED = frozenset(("reduction_op", "axis", "formula", "aliases"))


def make_generic(genred_class, reduction_op):
    def generic(formula, output, *aliases, **kwargs):
        for fixed in _FIXED.intersection(kwargs):
            raise LazyKeOpsError(f"generic_{reduction_op.lower()} of formula '{formula}' "
                                 f"sets {fixed} itself (from its name and the output "
                                 f"'{output}'): drop {fixed}=")
        out = parse_output_alias(output, formula)
        if out.cat not in (CAT_I, CAT_J):
            raise LazyKeOpsError(f"output '{output}' of formula '{formula}' must be Vi/Vx "
                                 "(reduction over j) or Vj/Vy (reduction over i)")
        if lookup(reduction_op).uses_k:  # as pykeops: "A = Vi(K)" gives K
            kwargs.setdefault("opt_arg", out.dim)
        routine = genred_class(formula, list(aliases), reduction_op=reduction_op,
                               axis=1 if out.cat == CAT_I else 0, **kwargs)
        expected = routine.core.k if routine.core.k is not None else \
            routine.core.nvals or routine.core.nidx
        if out.dim != expected:
            raise LazyKeOpsError(f"output '{output}' declares dim {out.dim}, but the "
                                 f"{reduction_op} of formula '{formula}' has dim {expected}")
        return routine

    generic.__name__ = f"generic_{reduction_op.lower()}"
    generic.__doc__ = (f"generic_{reduction_op.lower()}(formula, output, *aliases, **kwargs): "
                       f"a callable computing the {reduction_op} reduction of the formula.")
    return generic

