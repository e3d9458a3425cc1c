"""The minimal array protocol the framework-agnostic core needs: one class per framework.

A backend says whether an object is one of its arrays, gives its dtype name, shape and
data pointer, makes it contiguous, broadcasts it, converts it, allocates outputs, moves small
index arrays to and from numpy (block-sparse ranges), and tells how many threads the CPU
engine should use. torch and numpy are imported lazily, when a backend
is first used.
"""

import os


class TorchBackend:
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.dtypes = {torch.float32: "float32", torch.float64: "float64",
                       torch.float16: "float16", torch.bfloat16: "bfloat16"}
        self.from_name = {**{name: dtype for dtype, name in self.dtypes.items()},
                          "int64": torch.int64, "uint8": torch.uint8}

    def is_array(self, x):
        return isinstance(x, self.torch.Tensor)

    def as_array(self, x, dtype_name, device="cpu"):
        return self.torch.as_tensor(x, dtype=self.from_name[dtype_name], device=device)

    def target(self, device):
        """The engine for arrays on `device`: "cpu" or "cuda:sm_XY" (its architecture)."""
        if device == "cpu":
            return "cpu"
        major, minor = self.torch.cuda.get_device_capability(device)
        return f"cuda:sm_{major}{minor}"

    def launch_context(self, device):
        """(context manager making `device` current, its current stream's handle)."""
        dev = self.torch.device(device)
        return self.torch.cuda.device(dev), self.torch.cuda.current_stream(dev).cuda_stream

    def dtype_name(self, x):
        name = self.dtypes.get(x.dtype)
        return name if name is not None else str(x.dtype).replace("torch.", "")

    def device(self, x):
        return "cpu" if x.is_cpu else str(x.device)  # is_cpu: cheap, on every leaf

    def prepare(self, x, shape):
        """x broadcast to `shape`, contiguous (copies only when it must)."""
        if tuple(x.shape) != tuple(shape):
            x = x.expand(shape)
        return x.contiguous()

    def contiguous(self, x):
        return x.contiguous()

    def astype(self, x, dtype_name):
        return x.to(self.from_name[dtype_name])

    def copy_into(self, out, x):
        out.copy_(x)

    def data_ptr(self, x):
        return x.data_ptr()

    def empty(self, shape, dtype_name, like):
        return self.torch.empty(shape, dtype=self.from_name[dtype_name], device=like.device)

    def num_threads(self):
        return self.torch.get_num_threads()

    def to_host(self, x):
        """A numpy copy of an array (from the GPU: after the queued work that writes it)."""
        return x.detach().cpu().numpy()

    def from_host(self, a, device):
        """A numpy array as this framework's array on `device`."""
        x = self.torch.from_numpy(a)
        return x if device == "cpu" else x.to(device, non_blocking=False)


class NumpyBackend:
    name = "numpy"

    def __init__(self):
        import numpy

        self.np = numpy

    def is_array(self, x):
        return isinstance(x, self.np.ndarray)

    def as_array(self, x, dtype_name, device="cpu"):
        return self.np.asarray(x, dtype=dtype_name)

    def target(self, device):
        return "cpu"

    def dtype_name(self, x):
        return str(x.dtype)

    def device(self, x):
        return "cpu"

    def prepare(self, x, shape):
        if tuple(x.shape) != tuple(shape):
            x = self.np.broadcast_to(x, shape)
        return self.np.ascontiguousarray(x)

    def contiguous(self, x):
        return self.np.ascontiguousarray(x)

    def astype(self, x, dtype_name):
        return x.astype(dtype_name)

    def copy_into(self, out, x):
        out[...] = x

    def data_ptr(self, x):
        return x.ctypes.data

    def empty(self, shape, dtype_name, like):
        return self.np.empty(shape, dtype=dtype_name)

    def num_threads(self):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def to_host(self, x):
        return self.np.array(x)

    def from_host(self, a, device):
        return a


_INSTANCES = {}


def get_backend(name):
    backend = _INSTANCES.get(name)
    if backend is None:
        backend = _INSTANCES[name] = {"torch": TorchBackend, "numpy": NumpyBackend}[name]()
    return backend
