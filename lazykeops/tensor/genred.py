"""Genred: a reduction of a string formula, callable on torch tensors or numpy arrays.

`GenredCore` is framework-agnostic: it parses the formula and aliases once, then on each
call checks the arguments (count, shapes, dims, dtypes, devices, sizes, batch dims) before
anything is compiled, lowers the call to a KernelSpec, fetches the compiled kernel (built
and cached on first use) and launches it. The torch and numpy front ends bind it to their
backend. Shapes follow pykeops: an i- or j-variable of dim D is an array (..., N, D), a
parameter an array (..., D) (or a Python number when D = 1); leading batch dims broadcast.
"""

import ctypes

from ..compile.build import load_kernel, nvcc_available
from ..compile.codegen import check_stack_size, render_source
from ..compile.spec import DTYPES, SUM_SCHEMES, KernelSpec, swap_axis
from ..errors import LazyKeOpsError
from ..formula import CAT_I, CAT_J, CAT_P, var
from ..formula.aliases import parse_aliases
from ..formula.node import TEXT_LIMIT, render
from ..formula.parser import parse_formula
from ..formula.reductions import lookup
from .backends import get_backend
from .cuda_launch import launch_cuda
from .options import DTYPES_ACC, as_index, check_device_id

CAT_WORDS = {CAT_I: "i-indexed", CAT_J: "j-indexed", CAT_P: "a parameter"}
# pykeops's names. Arrays stay on their device: the backend must agree with it.
BACKENDS = ("auto", "CPU", "GPU", "GPU_1D", "GPU_2D")
HALF_DTYPES = ("float16", "bfloat16")


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


class GenredCore:
    """A reduction of formula nodes over i or j, checked once, called many times.

    formulas: the formula node, then the weights for LogSumExp/SumSoftMaxWeight; aliases:
    Alias(name, pos, cat, dim) for positions 0..n-1 (names only serve error messages);
    text: how errors quote the formula. See `lazykeops.torch.Genred` for the options, and
    tensor/options.py for how pykeops's keywords map onto them. axis and opt_arg may be
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
        self.output_slices = None  # ((start, core), ...) on the GPU: see cuda_launch.py
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
    def __call__(self, *args, backend="auto", out=None, device_id=-1):
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
        if dtype in HALF_DTYPES and device == "cpu":
            # The CPU engine has no half types: it computes in float32, as the GPU does.
            widened = [self.backend.astype(x, "float32") for x in arrays]
            return self._narrowed(self._compute(widened, "float32"), dtype, out)
        return self._compute(arrays, dtype, out, backend)

    def _compute(self, arrays, dtype, out=None, backend="auto"):
        sizes, batch = self._sizes(arrays)
        nout = sizes[CAT_I if self.axis == 1 else CAT_J]
        nred = sizes[CAT_J if self.axis == 1 else CAT_I]
        prepared, strides = self._prepare(arrays, batch)
        return self.run(dtype, batch, nout, nred, prepared, strides, out, backend)

    def _narrowed(self, result, dtype, out):
        """Float outputs of a widened computation back to `dtype` (into `out` if given)."""
        B = self.backend
        parts = result if isinstance(result, tuple) else (result,)
        parts = [p if B.dtype_name(p) == "int64" else B.astype(p, dtype) for p in parts]
        if out is not None:
            B.copy_into(self._output(out, tuple(parts[0].shape), dtype, parts[0]), parts[0])
            parts[0] = out
        return tuple(parts) if isinstance(result, tuple) else parts[0]

    def check_device(self, device):
        if device == "cpu":
            return
        if not device.startswith("cuda"):
            raise LazyKeOpsError(f"formula '{self.text}' got arrays on {device}; lazykeops runs "
                                 "on the CPU and on CUDA GPUs")
        if not nvcc_available():
            raise LazyKeOpsError(f"formula '{self.text}' got CUDA arrays, but no nvcc was found "
                                 "(install the CUDA toolkit or set CUDA_HOME)")
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

    def run(self, dtype, batch, nout, nred, prepared, strides, out=None, backend="auto"):
        """Allocate the outputs and launch, on arguments already checked: `prepared` are
        contiguous arrays laid out as (..., N, D), (..., M, D) or (..., D) in memory, with
        `strides` their offsets from one batch to the next (0 when broadcast)."""
        if self.k is not None and self.k > nred:
            raise LazyKeOpsError(f"reduction {self.reduction.name} with K={self.k} needs at "
                                 f"least K terms, but the reduced axis has {nred}, for "
                                 f"formula '{self.text}'")
        B = self.backend
        like = prepared[0]
        vals = self._output(out, (*batch, nout, self.nvals), dtype, like) if self.nvals \
            else None
        idx = B.empty((*batch, nout, self.nidx), "int64", like) if self.nidx else None
        cols = B.empty((*batch, nred, self.ncols), dtype, like) if self.ncols else None
        nbatch = 1
        for b in batch:
            nbatch *= b
        if nbatch and nout:
            self._launch(dtype, nbatch, nout, nred, prepared, strides, vals, idx, cols,
                         backend)
        elif cols is not None:
            cols[...] = 0
        if cols is not None:
            return vals, cols
        if vals is not None and idx is not None:
            return vals, idx
        return vals if vals is not None else idx

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
            arrays.append(self._check_shape(a, x))
        return arrays, dtype, device

    def _check_shape(self, a, x):
        shape = tuple(x.shape)
        if a.cat == CAT_P:
            if len(shape) == 0 and a.dim == 1:
                return x.reshape(1)
            ok = len(shape) >= 1 and shape[-1] == a.dim
            expected = f"(..., {a.dim})"
        else:
            ok = len(shape) >= 2 and shape[-1] == a.dim
            expected = f"(..., {'N' if a.cat == CAT_I else 'M'}, {a.dim})"
        if not ok:
            raise LazyKeOpsError(f"argument {a.name} of formula '{self.text}' is "
                                 f"{CAT_WORDS[a.cat]} of dim {a.dim}: expected shape "
                                 f"{expected}, got {shape}")
        return x

    def _sizes(self, arrays):
        """Sizes N and M, checked across variables, and the broadcast batch shape."""
        sizes, owner, batches = {}, {}, []
        for a, x in zip(self.aliases, arrays):
            shape = tuple(x.shape)
            if a.cat != CAT_P:
                n = shape[-2]
                if a.cat in sizes and sizes[a.cat] != n:
                    letter = "N" if a.cat == CAT_I else "M"
                    raise LazyKeOpsError(
                        f"arguments {owner[a.cat]} and {a.name} of formula '{self.text}' are "
                        f"both {CAT_WORDS[a.cat]} but have {letter} = {sizes[a.cat]} and {n}")
                sizes[a.cat], owner[a.cat] = n, a.name
                batches.append((a.name, shape[:-2]))
            else:
                batches.append((a.name, shape[:-1]))
        if not any(b for _, b in batches):
            return sizes, ()
        return sizes, self._broadcast_batch(batches)

    def _broadcast_batch(self, batches):
        ndim = max(len(b) for _, b in batches)
        result = [1] * ndim
        for name, b in batches:
            padded = (1,) * (ndim - len(b)) + tuple(b)
            for k, size in enumerate(padded):
                if size == 1:  # as torch: 1 broadcasts to any size, 0 included
                    continue
                if result[k] not in (1, size):
                    shown = ", ".join(f"{n}: {tuple(s)}" for n, s in batches)
                    raise LazyKeOpsError(f"batch dimensions of formula '{self.text}' do not "
                                         f"broadcast ({shown})")
                result[k] = size
        return tuple(result)

    def _prepare(self, arrays, batch):
        """Contiguous arrays and their batch strides (0 when broadcast over the batch)."""
        prepared, strides = [], []
        for a, x in zip(self.aliases, arrays):
            inner = tuple(x.shape[-1:] if a.cat == CAT_P else x.shape[-2:])
            own = tuple(x.shape[:len(x.shape) - len(inner)])
            per_batch = 1
            for s in inner:
                per_batch *= s
            if not own:
                prepared.append(self.backend.prepare(x, inner))
                strides.append(0)
            elif all(s == 1 for s in own):
                prepared.append(self.backend.prepare(x.reshape(inner), inner))
                strides.append(0)
            else:
                prepared.append(self.backend.prepare(x, (*batch, *inner)))
                strides.append(per_batch)
        return prepared, strides

    def _output(self, out, shape, dtype, like):
        B = self.backend
        if out is None:
            return B.empty(shape, dtype, like)
        if not B.is_array(out) or tuple(out.shape) != tuple(shape) or \
                B.dtype_name(out) != dtype or B.prepare(out, shape) is not out:
            got = (tuple(out.shape), B.dtype_name(out)) if B.is_array(out) else type(out)
            raise LazyKeOpsError(f"out= for formula '{self.text}' must be a contiguous "
                                 f"{dtype} array of shape {shape}, got {got}")
        return out

    # ------------------------------------------------------------------ launch
    def kernel(self, dtype, target="cpu"):
        lib = self._kernels.get((dtype, target))
        if lib is None:
            spec = KernelSpec(self.formulas, self.engine_args, self.reduction.name, self.k,
                              dtype, self.sum_scheme, target.split(":")[0])
            lib = load_kernel(render_source(spec), f"{self.reduction.name}({self.text})",
                              target)
            self._kernels[(dtype, target)] = lib
        return lib

    def _launch(self, dtype, nbatch, nout, nred, prepared, strides, vals, idx, cols, backend):
        B = self.backend
        device = B.device(prepared[0])
        ptrs = self._pointer_array(*[B.data_ptr(x) for x in prepared])
        bstrides = self._stride_array(*strides)
        vals_ptr = B.data_ptr(vals) if vals is not None else None
        idx_ptr = B.data_ptr(idx) if idx is not None else None
        if device == "cpu":
            status = self.kernel(dtype).run(
                nbatch, nout, nred, ptrs, bstrides, vals_ptr, idx_ptr,
                B.data_ptr(cols) if cols is not None else None, B.num_threads())
        else:
            status = launch_cuda(self, dtype, prepared[0], (nbatch, nout, nred), ptrs, bstrides,
                                 vals_ptr, idx_ptr, backend)
        if status == 2:
            raise LazyKeOpsError(f"the j-variables of formula '{self.text}' are too large: one "
                                 "term does not fit in the GPU's shared memory")
        if status != 0:
            raise RuntimeError(f"the kernel for formula '{self.text}' failed (status {status})")
