"""Genred: a reduction of a string formula, callable on torch tensors or numpy arrays.

`GenredCore` is framework-agnostic: it parses the formula and aliases once, then on each
call checks the arguments (count, dtypes, devices; then shapes, sizes and batch dims in the
runtime's signature step) before anything is compiled, and hands them to the runtime's
launcher, which fetches the kernel this core describes (`kernel()`: a KernelSpec, built and
cached on first use). `GenredFront` is what the torch and numpy Genred classes share: the
constructor's pykeops arguments. Shapes follow pykeops: an i- or j-variable of dim D is an
array (..., N, D), a parameter an array (..., D) (or a Python number when D = 1); leading
batch dims broadcast.
"""

import ctypes

from ..compile import nvrtc
from ..compile.build import load_kernel
from ..compile.codegen import check_stack_size, render_source
from ..compile.spec import DTYPES, SUM_SCHEMES, KernelSpec, swap_axis
from ..compile.tensor_cores import mode_for
from ..errors import LazyKeOpsError
from ..formula import CAT_I, CAT_J, CAT_P, var
from ..formula.aliases import parse_aliases
from ..formula.node import TEXT_LIMIT, render
from ..formula.parser import parse_formula
from ..formula.reductions import lookup
from ..runtime.abi import ABI_VERSION
from ..runtime.launch import launch, output, prepare
from ..runtime.ranges import block_sparse
from ..runtime.signature import CAT_WORDS, call_signature
from .backends import get_backend
from .options import (DTYPES_ACC, GENRED_CALL_KEYWORDS, GENRED_INIT_KEYWORDS, as_index,
                      bind_positional, check_device_id, split_reduction_options)
# pykeops's names. Arrays stay on their device: the backend must agree with it.
BACKENDS = ("auto", "CPU", "GPU", "GPU_1D", "GPU_2D")
HALF_DTYPES = ("float16", "bfloat16")
# While torch/custom_ops.py's backward runs, ROUTE holds its `call_op`: every core call
# (autograd's gradient reductions, a companion's indices) then goes through the custom op,
# so that AOTAutograd traces it into the backward graph. Empty otherwise (one list test).
ROUTE = []


def parse_genred(formula, aliases, formula2=None):
    """The string API's formula(s) and aliases -> (formula nodes, sorted Alias list, text)."""
    text = formula if formula2 is None else f"{formula} ; weights {formula2}"
    if isinstance(aliases, str):
        aliases = [aliases]
    aliases = sorted(parse_aliases(list(aliases), formula), key=lambda a: a.pos)
    nodes = {a.name: var(a.pos, a.dim, a.cat) for a in aliases}
    formulas = [parse_formula(formula, nodes)]
    if formula2 is not None:
        formulas.append(parse_formula(formula2, nodes))
    return tuple(formulas), aliases, text


# pykeops's Genred.__init__ positional arguments after cuda_type.
_MORE_POSITIONAL = ("dtype_acc", "use_double_acc", "sum_scheme", "enable_chunks",
                    "rec_multVar_highdim", "use_fast_math")


class GenredFront:
    """What the torch and numpy Genred classes share: pykeops's constructor arguments
    (positional past cuda_type too) read into a GenredCore, and the call keywords."""

    framework = None  # set by each binding

    def __init__(self, formula, aliases, reduction_op="Sum", axis=0, dtype=None,
                 opt_arg=None, formula2=None, cuda_type=None, *more, **options):
        formulas, aliases, text = parse_genred(formula, aliases, formula2)
        what = f"Genred of formula '{text}'"
        options = bind_positional(_MORE_POSITIONAL, more, options, what)
        init, _ = split_reduction_options({**options, "dtype": dtype, "cuda_type": cuda_type},
                                          what, accepted=GENRED_INIT_KEYWORDS)
        self.core = GenredCore(formulas, aliases, reduction_op, axis, opt_arg,
                               framework=self.framework, text=text, **init)

    def _call_options(self, options):
        """{backend, device_id, ranges, out} of a call."""
        _, opts = split_reduction_options(options, f"Genred of formula '{self.core.text}'",
                                          accepted=GENRED_CALL_KEYWORDS)
        return opts


class GenredCore:
    """A reduction of formula nodes over i or j, checked once, called many times.

    formulas: the formula node, then the weights for LogSumExp/SumSoftMaxWeight; aliases:
    Alias(name, pos, cat, dim) for positions 0..n-1 (names only serve error messages);
    text: how errors quote the formula. See `lazykeops.torch.Genred` for the options, and
    runtime/options.py for how pykeops's keywords map onto them. axis and opt_arg may be
    numpy integers or 0-d integer tensors, as in pykeops."""

    def __init__(self, formulas, aliases, reduction_op="Sum", axis=0, opt_arg=None,
                 dtype_acc="auto", sum_scheme="auto", framework="torch", text=None):
        self.formulas = tuple(formulas)
        self.aliases = list(aliases)
        self.text = text or " ; ".join(render(f, TEXT_LIMIT) for f in self.formulas)
        self.reduction = lookup(reduction_op, self.text)
        wdim = self.formulas[1].dim if len(self.formulas) > 1 else None
        what = f"formula '{self.text}'"
        if opt_arg is not None and self.reduction.uses_k:
            opt_arg = as_index(opt_arg, f"K (opt_arg) of {self.reduction.name}", what)
        if axis is not None and not isinstance(axis, int):
            axis = as_index(axis, "axis", what)
        self.reduction.check(self.formulas[0].dim, wdim, opt_arg, self.text)
        self.k = opt_arg if self.reduction.uses_k else None
        if axis not in (0, 1):
            raise LazyKeOpsError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got "
                                 f"{axis!r} for formula '{self.text}'")
        self.axis = axis
        if dtype_acc not in DTYPES_ACC:
            raise LazyKeOpsError(f"dtype_acc must be one of {DTYPES_ACC}, got {dtype_acc!r} "
                                 f"for formula '{self.text}'")
        if sum_scheme not in SUM_SCHEMES:
            raise LazyKeOpsError(f"sum_scheme must be one of {tuple(SUM_SCHEMES)}, got "
                                 f"{sum_scheme!r} for formula '{self.text}'")
        self.options = {"dtype_acc": dtype_acc, "sum_scheme": sum_scheme}  # for derived cores
        self.sum_scheme = "direct_sum" if dtype_acc == "float32" and sum_scheme == "auto" \
            else sum_scheme
        self._check_positions()
        # Engine-relative categories: CAT_I is "indexed like the output".
        self.engine_args = tuple((a.cat if axis == 1 else swap_axis(a.cat), a.dim)
                                 for a in self.aliases)
        self.nvals, self.nidx = self.reduction.outputs(self.formulas[0].dim, self._wdim(), self.k)
        self.ncols = self._wdim() if self.reduction.columns else 0
        check_stack_size(self.formulas, (self.nvals, self.nidx), self.text)
        self.backend = get_backend(framework)
        self.framework = framework
        self.derived = {}  # gradient and companion cores, built on first use
        self._kernels = {}
        self.output_slices = None  # ((start, core), ...) on the GPU: see runtime/cuda.py
        self._pointer_array = ctypes.c_void_p * len(self.aliases)
        self._stride_array = ctypes.c_int64 * len(self.aliases)

    def _check_positions(self):
        positions = [a.pos for a in self.aliases]
        if positions != list(range(len(positions))):
            raise LazyKeOpsError(f"argument positions {positions} of formula '{self.text}' "
                                 "must be 0, 1, ..., n-1 with no gap")
        for f in self.formulas:
            for v in f.variables():
                pos, dim, cat = v.params
                if pos >= len(self.aliases) or (self.aliases[pos].dim, self.aliases[pos].cat) \
                        != (dim, cat):
                    raise LazyKeOpsError(f"variable Var({pos},{dim},{cat}) in formula "
                                         f"'{self.text}' does not match the aliases")
        cats = {a.cat for a in self.aliases}
        for needed in (CAT_I, CAT_J):
            if needed not in cats:
                raise LazyKeOpsError(
                    f"formula '{self.text}' has no {CAT_WORDS[needed]} variable, so the "
                    f"number of {'rows' if needed == CAT_I else 'columns'} is unknown")

    # ------------------------------------------------------------------ call
    def __call__(self, *args, backend="auto", out=None, device_id=-1, ranges=None):
        if ROUTE:
            return ROUTE[-1](self, args, backend, out, ranges)
        return self.compute(*args, backend=backend, out=out, device_id=device_id, ranges=ranges)

    def compute(self, *args, backend="auto", out=None, device_id=-1, ranges=None):
        """The reduction on `args` (checked, then launched), never routed. `ranges`:
        pykeops's block-sparse 6-tuple, or a BlockSparse (runtime/ranges.py)."""
        self.check_backend(backend)  # the name, before any array is looked at
        if device_id != -1:
            self.check_device_id(args, device_id)
        if len(args) != len(self.aliases):
            names = ", ".join(a.name for a in self.aliases)
            raise LazyKeOpsError(f"formula '{self.text}' takes {len(self.aliases)} arguments "
                                 f"({names}), got {len(args)}")
        arrays, dtype, device = self._as_arrays(args)
        if backend != "auto":
            self.check_backend(backend, device)
        ranges = block_sparse(ranges, self.backend, device, f"formula '{self.text}'")
        if dtype in HALF_DTYPES and device == "cpu":
            # The CPU engine has no half types: it computes in float32, as the GPU does.
            widened = [self.backend.astype(x, "float32") for x in arrays]
            return self._narrowed(self._compute(widened, "float32", device, ranges=ranges),
                                  dtype, out)
        return self._compute(arrays, dtype, device, out, backend, ranges)

    def _compute(self, arrays, dtype, device, out=None, backend="auto", ranges=None):
        sig = call_signature(self, [x.shape for x in arrays], dtype, device)
        return launch(self, sig, prepare(self, sig, arrays), out, backend, ranges)

    def _narrowed(self, result, dtype, out):
        """Float outputs of a widened computation back to `dtype` (into `out` if given)."""
        B = self.backend
        parts = result if isinstance(result, tuple) else (result,)
        parts = [p if B.dtype_name(p) == "int64" else B.astype(p, dtype) for p in parts]
        if out is not None:
            B.copy_into(output(self, out, tuple(parts[0].shape), dtype, parts[0]), parts[0])
            parts[0] = out
        return tuple(parts) if isinstance(result, tuple) else parts[0]

    def check_device(self, device):
        if device == "cpu":
            return
        if not device.startswith("cuda"):
            raise LazyKeOpsError(f"formula '{self.text}' got arrays on {device}; lazykeops runs "
                                 "on the CPU and on CUDA GPUs")
        if nvrtc.compiler() is None:
            raise LazyKeOpsError(f"formula '{self.text}' got CUDA arrays, but "
                                 f"{nvrtc.missing_compiler()}")
        if self.ncols:
            raise LazyKeOpsError(f"{self.reduction.name} runs on the CPU only")

    def check_device_id(self, args, device_id):
        """pykeops's device_id against the device of the first array in `args`."""
        B = self.backend
        device = next((B.device(x) for x in args if B.is_array(x)), "cpu")
        check_device_id(device_id, device, f"formula '{self.text}'")

    def check_backend(self, backend, device=None):
        """The backend's name, and with `device`, that it agrees with the arrays' device."""
        if backend not in BACKENDS:
            raise LazyKeOpsError(f"backend must be one of {BACKENDS} for formula "
                                 f"'{self.text}', got {backend!r}")
        if device is None:
            return
        on_gpu = device != "cpu"
        if backend != "auto" and (backend == "CPU") == on_gpu:
            raise LazyKeOpsError(f"backend {backend!r} for formula '{self.text}', but its "
                                 f"arrays are on {device}: lazykeops computes where the data "
                                 "is (move the arrays, or use backend='auto')")

    def _wdim(self):
        return self.formulas[1].dim if len(self.formulas) > 1 else 0

    def _as_arrays(self, args):
        B = self.backend
        dtype = device = None
        for a, x in zip(self.aliases, args):
            if B.is_array(x):
                name, where = B.dtype_name(x), B.device(x)
                if dtype is None:
                    dtype, device, first = name, where, a.name
                elif name != dtype:
                    raise LazyKeOpsError(f"argument {a.name} of formula '{self.text}' has dtype "
                                         f"{name}, but argument {first} has dtype {dtype}: "
                                         "all arrays must share one dtype")
                elif where != device:
                    raise LazyKeOpsError(f"argument {a.name} of formula '{self.text}' is on "
                                         f"{where}, but argument {first} is on {device}: all "
                                         "arrays must be on one device")
        device = device or "cpu"
        self.check_device(device)
        dtype = dtype or "float64"
        if dtype not in DTYPES:
            raise LazyKeOpsError(f"formula '{self.text}' got arrays of dtype {dtype}; expected "
                                 f"one of {', '.join(DTYPES)}")
        arrays = []
        for a, x in zip(self.aliases, args):
            if not B.is_array(x):
                if a.cat != CAT_P:
                    raise LazyKeOpsError(f"argument {a.name} of formula '{self.text}' must be "
                                         f"an array of shape (..., N, {a.dim}), got "
                                         f"{type(x).__name__}")
                try:
                    x = B.as_array(x, dtype, device)
                except (TypeError, ValueError) as err:
                    raise LazyKeOpsError(f"argument {a.name} of formula '{self.text}' is not "
                                         f"a number or a list of numbers: {err}") from None
            arrays.append(x)  # shapes are checked by the signature step
        return arrays, dtype, device

    # ------------------------------------------------------------------ kernel
    def kernel(self, dtype, target="cpu", block_sparse=False):
        """The loaded library of this reduction for `dtype` on `target` ("cpu" or
        "cuda:sm_XY"), dense or block-sparse, built and cached on first use."""
        key = self.kernel_key(dtype, target, block_sparse)
        lib = self._kernels.get(key)
        if lib is None:
            spec = self.kernel_spec(dtype, target, block_sparse)
            interface = {"abi_version": ABI_VERSION, "dtype": dtype,
                         "arguments": [[a.name, a.cat, a.dim] for a in self.aliases],
                         "axis": self.axis, "outputs": {"values": self.nvals,
                                                        "indices": self.nidx,
                                                        "columns": self.ncols},
                         "block_sparse": block_sparse}
            description = f"{self.reduction.name}({self.text})"
            if spec.target == "cuda" and nvrtc.chosen():
                from ..compile.driver import load_library  # imports torch: CUDA only
                lib = load_library(spec, description, target, interface)
            else:
                lib = load_kernel(render_source(spec), description, target, interface)
            self._kernels[key] = lib
        return lib

    def kernel_spec(self, dtype, target="cpu", block_sparse=False):
        """The KernelSpec of this reduction's library for `dtype` on `target`."""
        mode = self.kernel_key(dtype, target, block_sparse)[-1]
        return KernelSpec(self.formulas, self.engine_args, self.reduction.name, self.k, dtype,
                          self.sum_scheme, target.split(":")[0], block_sparse, mode)

    @staticmethod
    def kernel_key(dtype, target, block_sparse):
        """What selects one of a reduction's libraries: with the tensor cores' operand
        precision, which follows torch's float32 matmul setting (compile/tensor_cores.py)."""
        return dtype, target, block_sparse, mode_for(dtype, target)
