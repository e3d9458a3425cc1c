"""pykeops's reduction keywords, read in one place.

pykeops 2.3 spreads its options over `Genred.__init__` (dtype_acc, use_double_acc,
sum_scheme, enable_chunks, rec_multVar_highdim, use_fast_math, and the deprecated dtype
and cuda_type), `Genred.__call__` (backend, device_id, ranges, out) and LazyTensor
reductions (which take both sets, plus optional_flags, as keywords). This module checks
them all and says what lazykeops's engine uses instead, as two plain dicts keyed by
GenredCore's own keyword names:

    init, call = split_reduction_options(kwargs, "formula 'SqDist(X,Y)'")
    core = GenredCore(..., **init)           # {"dtype_acc": ..., "sum_scheme": ...}
    core(*args, **call)                      # {"backend", "device_id", "ranges", "out"}

Callers that launch through `runtime.launch` or `torch.autograd.call` (which take no
device_id) check it first with `check_device_id(call.pop("device_id"), device, what)`.

Per keyword:
- mapped: dtype_acc ("auto", "float32", "float64"; use_double_acc=True is dtype_acc=
  "float64", and setting both is an error, as in pykeops); sum_scheme ("auto",
  "direct_sum", "block_sum", "kahan_scheme": lazykeops has the same three schemes);
  backend (pykeops's names; the *_device and *_host variants name the same scheme, and
  lazykeops computes where the arrays are, so a GPU backend with CPU arrays is refused
  by GenredCore).
- checked: device_id (-1, or the index of the GPU holding the arrays; anything else is
  an error naming both, since lazykeops never moves data between devices); ranges
  (block-sparse reductions, pykeops's 6-tuple: runtime/ranges.py checks them against the
  arrays).
- accepted, with no effect: dtype and cuda_type (pykeops 2 ignores them too, with a
  warning; the arrays' dtype decides); enable_chunks and rec_multVar_highdim (GPU
  scheduling hints: lazykeops's CUDA launcher picks its own tiles and output slices, the
  result does not depend on them); use_fast_math (lazykeops never builds with
  --use_fast_math, so results are the accurate ones either way).
- refused: optional_flags other than empty (pykeops's compiler flags have no lazykeops
  meaning).
Where pykeops refuses dtype_acc or sum_scheme on selections (Min, ArgKMin, ...), lazykeops
accepts them without effect: selections are exact, whatever the accumulator.

`bind_positional` maps pykeops's trailing positional arguments onto these names, and
`as_index` reads the integers pykeops also takes as numpy integers or 0-d tensors (axis,
opt_arg / K).
"""

import operator
import warnings

from ..compile.spec import SUM_SCHEMES
from ..errors import LazyKeOpsError

DTYPES_ACC = ("auto", "float32", "float64")
# pykeops's backend names -> the ones GenredCore knows.
BACKEND_NAMES = {"auto": "auto", "CPU": "CPU", "GPU": "GPU",
                 "GPU_1D": "GPU_1D", "GPU_1D_device": "GPU_1D", "GPU_1D_host": "GPU_1D",
                 "GPU_2D": "GPU_2D", "GPU_2D_device": "GPU_2D", "GPU_2D_host": "GPU_2D"}
# Which side of pykeops's Genred each keyword belongs to, with its default.
INIT_DEFAULTS = {"dtype_acc": "auto", "use_double_acc": False, "sum_scheme": "auto",
                 "enable_chunks": True, "use_fast_math": True, "optional_flags": None,
                 "rec_multVar_highdim": False, "dtype": None, "cuda_type": None}
CALL_DEFAULTS = {"backend": "auto", "device_id": -1, "ranges": None, "out": None}
# The keywords of a LazyTensor reduction (pykeops's separate_kwargs sends these on).
REDUCTION_KEYWORDS = ("dtype_acc", "use_double_acc", "sum_scheme", "enable_chunks",
                      "use_fast_math", "optional_flags", *CALL_DEFAULTS)
GENRED_INIT_KEYWORDS = tuple(k for k in INIT_DEFAULTS if k != "optional_flags")
GENRED_CALL_KEYWORDS = tuple(CALL_DEFAULTS)


def split_reduction_options(kwargs, what, accepted=REDUCTION_KEYWORDS):
    """pykeops keywords -> (init options for GenredCore(), call options for core()).

    `kwargs` is a dict of the keywords given (missing ones take pykeops's defaults);
    `what` names the formula or LazyTensor in messages; `accepted` are the keywords this
    entry point takes (a LazyTensor reduction by default): any other is an error."""
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise LazyKeOpsError(f"unknown keyword argument(s) {', '.join(map(repr, unknown))} "
                             f"for {what}; pykeops's keywords here are "
                             f"{', '.join(accepted)}")
    init = init_options(**{k: v for k, v in kwargs.items() if k in INIT_DEFAULTS},
                        what=what)
    call = call_options(**{k: v for k, v in kwargs.items() if k in CALL_DEFAULTS},
                        what=what)
    return init, call


def init_options(what, dtype_acc="auto", use_double_acc=False, sum_scheme="auto",
                 enable_chunks=True, use_fast_math=True, optional_flags=None,
                 rec_multVar_highdim=False, dtype=None, cuda_type=None):
    """The init-side keywords -> {"dtype_acc", "sum_scheme"} for GenredCore."""
    for name, value in (("dtype", dtype), ("cuda_type", cuda_type)):
        if value:  # pykeops 2 warns and ignores them: the arrays' dtype decides
            warnings.warn(f"keyword argument {name} is deprecated (as in pykeops 2) and "
                          f"ignored for {what}: the arrays' dtype is used", stacklevel=4)
    for name, value in (("use_double_acc", use_double_acc), ("enable_chunks", enable_chunks),
                        ("use_fast_math", use_fast_math)):
        _flag(name, value, what)
    if rec_multVar_highdim is not None and not isinstance(rec_multVar_highdim, bool):
        as_index(rec_multVar_highdim, "rec_multVar_highdim", what)  # pykeops: a position
    if optional_flags:
        raise LazyKeOpsError(f"optional_flags={optional_flags!r} for {what}: pykeops's "
                             "compiler flags have no meaning in lazykeops (drop them)")
    if not isinstance(dtype_acc, str) or dtype_acc not in DTYPES_ACC:
        half = " (lazykeops accumulates half-precision data in float32 at least)" \
            if dtype_acc == "float16" else ""
        raise LazyKeOpsError(f"dtype_acc must be one of {DTYPES_ACC} for {what}, got "
                             f"{dtype_acc!r}{half}")
    if use_double_acc:
        if dtype_acc != "auto":
            raise LazyKeOpsError(f"use_double_acc=True and dtype_acc={dtype_acc!r} for "
                                 f"{what}: set only one of the two (as in pykeops)")
        dtype_acc = "float64"
    if not isinstance(sum_scheme, str) or sum_scheme not in SUM_SCHEMES:
        raise LazyKeOpsError(f"sum_scheme must be one of {tuple(SUM_SCHEMES)} for {what}, "
                             f"got {sum_scheme!r}")
    return {"dtype_acc": dtype_acc, "sum_scheme": sum_scheme}


def call_options(what, backend="auto", device_id=-1, ranges=None, out=None):
    """The call-side keywords -> {"backend", "device_id", "ranges", "out"} for
    GenredCore.__call__ (ranges are checked there, against the arrays)."""
    if not isinstance(backend, str) or backend not in BACKEND_NAMES:
        raise LazyKeOpsError(f"backend must be one of {tuple(BACKEND_NAMES)} for {what}, "
                             f"got {backend!r}")
    device_id = as_index(device_id, "device_id", what)
    if device_id < -1:
        raise LazyKeOpsError(f"device_id must be -1 (the arrays' device) or a GPU index "
                             f">= 0 for {what}, got {device_id}")
    return {"backend": BACKEND_NAMES[backend], "device_id": device_id, "ranges": ranges,
            "out": out}


def check_device_id(device_id, device, what):
    """device_id (checked by call_options) against the arrays' device ("cpu", "cuda:1"):
    lazykeops computes where the arrays are and never copies them to another device."""
    if device_id == -1:
        return
    if device == "cpu":
        raise LazyKeOpsError(f"device_id={device_id} for {what}, but its arrays are on the "
                             f"CPU: lazykeops computes where the data is (move the arrays "
                             f"to cuda:{device_id}, or leave device_id=-1)")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index != device_id:
        raise LazyKeOpsError(f"device_id={device_id} for {what}, but its arrays are on "
                             f"{device}: use device_id={index} or -1, or move the arrays "
                             f"to cuda:{device_id}")


def bind_positional(names, values, options, what):
    """pykeops's positional arguments after the named ones (`names`, in pykeops's order)
    merged into the keyword dict `options`: too many, or one also given by keyword, is the
    project's error rather than Python's TypeError."""
    if len(values) > len(names):
        raise LazyKeOpsError(f"{what} takes at most {len(names)} more positional "
                             f"argument(s) ({', '.join(names)}), got {len(values)}")
    merged = dict(options)
    for name, value in zip(names, values):
        if name in merged:
            raise LazyKeOpsError(f"{what} got {name} both by position and by keyword")
        merged[name] = value
    return merged


def as_index(value, name, what):
    """An integer argument given as an int, a numpy integer or a 0-d integer tensor or
    array (as pykeops takes them): a Python int, or the project's error."""
    if isinstance(value, bool) or getattr(value, "ndim", 0) != 0:
        raise _not_an_integer(value, name, what)
    try:
        return operator.index(value)
    except TypeError:
        raise _not_an_integer(value, name, what) from None


def _not_an_integer(value, name, what):
    shape = getattr(value, "shape", None)
    got = f"{type(value).__name__} of shape {tuple(shape)}" if shape else repr(value)
    return LazyKeOpsError(f"{name} of {what} must be an integer, got {got}")


def _flag(name, value, what):
    if not isinstance(value, (bool, int)) and type(value).__name__ != "bool_":
        raise LazyKeOpsError(f"{name} of {what} must be True or False, got {value!r}")
