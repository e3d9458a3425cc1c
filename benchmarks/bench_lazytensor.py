"""Per-call overhead of the LazyTensor front end (issue 3): a Gaussian conv at N = M = 100
built as a LazyTensor expression on every call, against a direct Genred call of the same
formula, and against pykeops's LazyTensor when importable.

    python benchmarks/bench_lazytensor.py

The candidates alternate in rounds, so that machine noise hits them alike; the best round
of each is printed (the cost of the code itself, without the noise of other processes).
"""

import os
import tempfile
import time

import torch


def per_call(fn, calls=1000):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main(n=100, rounds=15):
    os.environ.setdefault("LAZYKEOPS_VERBOSE", "0")
    os.environ.setdefault("LAZYKEOPS_CACHE_DIR", tempfile.mkdtemp(prefix="lk-bench-"))
    from lazykeops.torch import Genred, LazyTensor

    torch.manual_seed(0)
    x, y, b = torch.rand(n, 3), torch.rand(n, 3), torch.rand(n, 1)
    g = torch.tensor([0.5])
    genred = Genred("Exp(-G*SqDist(X,Y)) * B",
                    ["G = Pm(1)", "X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"], axis=1)

    def with_genred():
        return genred(g, x, y, b)

    def with_lazytensor():
        X, Y = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
        return (-((X - Y) ** 2).sum(-1) * 0.5).exp() @ b

    torch.testing.assert_close(with_lazytensor(), with_genred())
    candidates = {"Genred": with_genred, "LazyTensor": with_lazytensor}
    try:
        from pykeops.torch import LazyTensor as PkLazyTensor

        def with_pykeops():
            X, Y = PkLazyTensor(x[:, None, :]), PkLazyTensor(y[None, :, :])
            return (-((X - Y) ** 2).sum(-1) * 0.5).exp() @ b

        with_pykeops()
        candidates["pykeops LazyTensor"] = with_pykeops
    except Exception:  # pykeops absent or broken here
        pass
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            times[name].append(per_call(fn, 200))
    best = {name: min(t) for name, t in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| Gaussian conv N = M = 100, D = 3 | per call | vs Genred |\n|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t * 1e6:.1f} us | {t / best['Genred']:.2f}x |")


if __name__ == "__main__":
    main()
