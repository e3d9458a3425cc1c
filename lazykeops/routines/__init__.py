"""pykeops's routines above Genred, written once for the torch and numpy bindings:
`generic_sum` and friends (generic.py), KernelSolve's checks and conjugate gradient
(kernel_solve.py), and the block-sparse clustering helpers' algorithms (cluster.py).
Each binding adds its framework: lazykeops/torch and lazykeops/numpy."""
