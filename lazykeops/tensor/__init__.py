"""The LazyTensor front end, framework-free: expressions of i-, j- and batch-indexed
variables (lazy.py, lazy_shapes.py), their methods (lazy_pykeops.py, lazy_linear.py, ...),
complex LazyTensors, and the lowering of a reduction to a GenredCore (lazy_reduce.py).
lazykeops.torch and lazykeops.numpy make the classes users import (lazy_api.py)."""
