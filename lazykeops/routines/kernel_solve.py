"""KernelSolve: a = (alpha Id + K) \\ b, for K a Sum reduction linear in one of its
variables, by conjugate gradient (pykeops 2.3's KernelSolve).

KernelSolve(formula, aliases, varinvalias, axis=0, ...) reads `formula` as a Sum over the
reduced index; varinvalias names the variable b the formula is linear in, so that
K(args) b is the Genred of the formula with b in its slot. A call K_inv(*args, alpha=,
eps=) takes b's place in `args` as the right-hand side and returns a with b's shape: b
must be indexed by the reduced index with the formula's dim, and the reduced axis and the
output axis must have the same length (K is square; as in pykeops, symmetric positive
definite is the caller's promise). Stopping rule, as pykeops: |residual|^2 < size(b) eps^2.
Unlike pykeops, which loops until then, the iterations stop after 10 N + 100 with an error.

This module owns the framework-agnostic part (checks, the solve) and the numpy class;
torch/kernel_solve.py adds autograd. Options follow Genred (runtime/options.py): ranges
make K's products block-sparse (runtime/ranges.py; the backward assumes them symmetric, as
it assumes K is), pykeops's GPU hints are accepted without effect.
"""

import math
import numbers

from ..errors import LazyKeOpsError
from ..formula import CAT_I, CAT_J
from ..runtime.genred import GenredCore, parse_genred
from ..runtime.ranges import block_sparse
from ..runtime.signature import call_signature
from ..runtime.options import GENRED_INIT_KEYWORDS, bind_positional, check_device_id, \
    split_reduction_options

SOLVE_CALL_KEYWORDS = ("backend", "device_id", "ranges", "alpha", "eps")


class KernelSolveCore:
    """The checked formula, the position of the variable solved for, and its Sum core."""

    def __init__(self, formula, aliases, varinvalias, axis, options, framework):
        formulas, aliases, text = parse_genred(formula, aliases)
        self.what = f"KernelSolve of formula '{text}'"
        init, _ = split_reduction_options(options, self.what, accepted=GENRED_INIT_KEYWORDS)
        self.core = GenredCore(formulas, aliases, "Sum", axis, framework=framework,
                               text=text, **init)
        self.pos = self._position(varinvalias, aliases)
        target = self.core.aliases[self.pos]
        reduced = CAT_J if self.core.axis == 1 else CAT_I
        if target.cat != reduced or target.dim != formulas[0].dim:
            kind = "Vj" if reduced == CAT_J else "Vi"
            raise LazyKeOpsError(f"varinvalias '{varinvalias}' of {self.what} must be "
                                 f"{kind}({formulas[0].dim}) (indexed by the reduced index, "
                                 f"with the formula's dim, axis={self.core.axis}), got "
                                 f"'{target.name}' of dim {target.dim}")

    def _position(self, varinvalias, aliases):
        if not isinstance(varinvalias, str):
            raise LazyKeOpsError(f"varinvalias of {self.what} must be an alias name, got "
                                 f"{varinvalias!r}")
        name = varinvalias.strip()
        if name.startswith("Var("):  # pykeops also takes "Var(pos,dim,cat)"
            head = name[4:].split(",")[0].strip()
            if head.isdigit() and int(head) < len(aliases):
                return int(head)
        for a in aliases:
            if a.name == name:
                return a.pos
        raise LazyKeOpsError(f"varinvalias '{varinvalias}' of {self.what} is not one of its "
                             f"aliases ({', '.join(a.name for a in aliases)})")

    def call_options(self, options):
        """pykeops's call keywords -> (backend, device_id, alpha, eps, ranges), checked
        (ranges against the arrays by `check`)."""
        unknown = sorted(set(options) - set(SOLVE_CALL_KEYWORDS))
        if unknown:
            raise LazyKeOpsError(f"unknown keyword argument(s) {', '.join(map(repr, unknown))}"
                                 f" for {self.what}; expected {', '.join(SOLVE_CALL_KEYWORDS)}")
        alpha, eps = options.pop("alpha", 1e-10), options.pop("eps", 1e-6)
        for name, value in (("alpha", alpha), ("eps", eps)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or \
                    not math.isfinite(value) or value < 0 or (name == "eps" and value == 0):
                limit = "a positive" if name == "eps" else "a non-negative"
                raise LazyKeOpsError(f"{name} of {self.what} must be {limit} number, got "
                                     f"{value!r}")
        _, call = split_reduction_options(options, self.what,
                                          accepted=("backend", "device_id", "ranges"))
        return call["backend"], call["device_id"], float(alpha), float(eps), call["ranges"]

    def check(self, args, backend, device_id, ranges=None):
        """Arguments checked as Genred does, and K square: before anything is compiled.
        Returns the block-sparse ranges of K's products (a BlockSparse), or None."""
        self.core.check_backend(backend)
        if len(args) != len(self.core.aliases):
            names = ", ".join(a.name for a in self.core.aliases)
            raise LazyKeOpsError(f"{self.what} takes {len(self.core.aliases)} arguments "
                                 f"({names}), got {len(args)}")
        arrays, dtype, device = self.core._as_arrays(args)
        self.core.check_backend(backend, device)
        check_device_id(device_id, device, self.what)
        sig = call_signature(self.core, [x.shape for x in arrays], dtype, device)
        if sig.nout != sig.nred:
            n, m = (sig.nout, sig.nred) if self.core.axis == 1 else (sig.nred, sig.nout)
            raise LazyKeOpsError(f"{self.what} solves a square system, but the i-variables "
                                 f"have N = {n} rows and the j-variables M = {m}")
        ranges = block_sparse(ranges, self.core.backend, device, self.what)
        if ranges is not None:  # their values against these sizes, now
            ranges.layout(self.core.axis, sig.nout, sig.nred, sig.batch)
        return ranges

    def solve(self, args, alpha, eps, backend, ranges=None, run=None):
        """(alpha Id + K) a = args[pos] by conjugate gradient, K block-sparse with
        `ranges`; `run(core, args, backend)` evaluates K (core.__call__ by default)."""
        run = run or (lambda core, xs, be: core(*xs, backend=be, ranges=ranges))
        args = list(args)
        b = args[self.pos]

        def apply(p):
            args[self.pos] = p
            kp = run(self.core, args, backend)
            return alpha * p + kp if alpha else kp

        norm = float((b * b).sum()) ** 0.5
        if norm == 0:
            return b * 0
        size = math.prod(b.shape)
        # conjugate_gradient stops at |r| <= eps' |b|: pykeops's |r|^2 < size(b) eps^2.
        rows = b.shape[-2]
        return conjugate_gradient(apply, b, eps * math.sqrt(size) / norm, 10 * rows + 100,
                                  self.what)


class KernelSolve:
    """(alpha Id + K) \\ b for numpy arrays, as pykeops.numpy.KernelSolve:

    KernelSolve(formula, aliases, varinvalias, axis=0, dtype=None, opt_arg=None,
                dtype_acc="auto", use_double_acc=False, sum_scheme="auto",
                enable_chunks=True, rec_multVar_highdim=None, use_fast_math=True)
        (*args, backend="auto", device_id=-1, alpha=1e-10, eps=1e-6, ranges=None)

    opt_arg (meaningless for a Sum) is accepted and ignored, as in pykeops."""

    framework = "numpy"
    _MORE = ("dtype", "opt_arg", "dtype_acc", "use_double_acc", "sum_scheme", "enable_chunks",
             "rec_multVar_highdim", "use_fast_math")

    def __init__(self, formula, aliases, varinvalias, axis=0, *more, **options):
        options = bind_positional(self._MORE, more, options, f"KernelSolve('{formula}')")
        options.pop("opt_arg", None)
        self.solver = KernelSolveCore(formula, aliases, varinvalias, axis, options,
                                      self.framework)

    def __call__(self, *args, **options):
        backend, device_id, alpha, eps, ranges = self.solver.call_options(options)
        ranges = self.solver.check(args, backend, device_id, ranges)
        return self.solver.solve(args, alpha, eps, backend, ranges)


def conjugate_gradient(apply, b, eps, maxiter, what):
    """Solve apply(x) = b column by column (b: (N,) or (..., N, E)), all columns at once."""
    x = b * 0
    r = b - apply(x)
    p = r
    rs = (r * r).sum(-2 if len(b.shape) > 1 else -1)
    target = float(((b * b).sum()) ** 0.5) * eps
    for _ in range(maxiter):
        if float(rs.sum()) ** 0.5 <= target:
            return x
        ap = apply(p)
        curvature = (p * ap).sum(-2 if len(b.shape) > 1 else -1)
        # A column whose residual is exactly 0 is solved (a zero right-hand side, or exact
        # convergence): its direction is 0 too, and so is its curvature, which is no sign
        # of an indefinite operator. Such columns take steps of 0.
        solved = rs == 0
        if float(((curvature <= 0) & ~solved).sum()) > 0:
            raise LazyKeOpsError(f"{what}: the operator is not positive definite "
                                 "(conjugate gradient met a direction of non-positive "
                                 "curvature)")
        step = rs / (curvature + solved)
        expand = (lambda s: s[..., None, :]) if len(b.shape) > 1 else (lambda s: s)
        x = x + expand(step) * p
        r = r - expand(step) * ap
        rs_new = (r * r).sum(-2 if len(b.shape) > 1 else -1)
        p = r + expand(rs_new / (rs + solved)) * p
        rs = rs_new
    if float(rs.sum()) ** 0.5 <= target:
        return x
    raise LazyKeOpsError(f"{what}: conjugate gradient did not converge in {maxiter} "
                         f"iterations (residual {float(rs.sum()) ** 0.5:.3e}, target "
                         f"{target:.3e}); raise maxiter or eps, or increase alpha")
