"""The runtime seam between the front ends and the compiled kernels.

The reduction object both front ends build is `GenredCore` (genred.py): formulas checked
once, called many times. pykeops's keywords are read in options.py; backends.py is the
small array protocol (torch, numpy) the framework-free code needs.

Every reduction (Genred, LazyTensor, autograd's gradient reductions, KernelSolve's
products) goes through the same two steps:

- `signature` (signature.py): from the arguments' shapes, dtypes and devices alone, the
  call's sizes, batch shape and output shapes, or a LazyKeOpsError; no kernel, no array.
  Fake tensors (torch.compile) and other bindings can use it as it is.
- `launch` (launch.py): contiguous inputs, output allocation, the kernel (built and cached
  on first use), and the call through the one C entry point (abi.py); on the GPU, output
  slices and the split scheme's workspace (cuda.py).

The LazyTensor front end has already checked everything a signature checks when it built
its expression, so it makes its Signature directly (its fast path) and calls `launch`.
"""
