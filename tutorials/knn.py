"""k-nearest-neighbour classification with ArgKMin.

The k-nearest-neighbour (k-NN) classifier is the simplest non-parametric rule for
supervised classification. Given training pairs (x_j, y_j), with x_j a point of R^d and
y_j one of C class labels, it predicts the label of a new point x by a majority vote
among the k training points closest to x (here in Euclidean distance). There is no model
to fit: the training sample *is* the model, and all the work happens at prediction time.

The number of neighbours k is the smoothing parameter. With k = 1 the rule follows every
training point, noise included: low bias, high variance (Cover and Hart showed its
asymptotic error is still at most twice the Bayes error). As k grows the vote averages
over a larger neighbourhood, the decision boundary becomes smoother, variance falls and
bias rises; with k = n the rule predicts the majority class everywhere. The usual way to
choose k is to look at the error on data held out from training, which is what the
"accuracy against k" figure shows. When k -> infinity with k / n -> 0 the rule is
consistent (Stone, 1977): its error tends to the Bayes error for any distribution.

A vote can be tied (an even k with two classes, or several classes). We break ties as
scikit-learn does: the smallest class label wins. With continuous data, ties among
*distances* (two training points exactly as far from x) have probability zero, so the set
of k nearest neighbours is well defined and the predictions must match scikit-learn's
exactly; we compute in float64 so that rounding does not reorder near-ties either.

The cost is the search: n_query x n_train distances. lazykeops never stores that matrix:
`D.argKmin(K, dim=1)` streams over the training points and keeps, for each query, the
indices of the K smallest distances, sorted by increasing distance. Sorting is what lets
one reduction serve every k <= K: the k nearest neighbours are the first k columns. A
dense grid of query points for a decision-boundary picture, or a million training points
on a GPU, is then a single call.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from lazykeops.torch import LazyTensor

DEFAULT_OUT = Path(__file__).resolve().parent / "figures" / "knn"


def moons(n, noise, seed):
    """Two interleaved half circles with Gaussian noise: a 2-D, 2-class problem."""
    from sklearn.datasets import make_moons
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return torch.from_numpy(x), torch.from_numpy(y).long()


def nearest_training_points(x_query, x_train, kmax):
    """Indices (n_query, kmax) of the kmax nearest training points, nearest first."""
    X = LazyTensor(x_query[:, None, :])      # queries are indexed by i
    Y = LazyTensor(x_train[None, :, :])      # training points by j
    D = ((X - Y) ** 2).sum(-1)               # symbolic squared distances, never stored
    return D.argKmin(kmax, dim=1)


def majority_votes(neighbour_labels, n_classes):
    """Predicted label for every k = 1..kmax at once: shape (kmax, n_query).

    votes[k-1, i, c] counts the label c among the first k neighbours of query i; a
    cumulative sum over the neighbours gives every k in one pass. torch.argmax returns
    the first maximum, i.e. the smallest tied label, which is scikit-learn's rule.
    """
    one_hot = torch.nn.functional.one_hot(neighbour_labels, n_classes)   # (n, kmax, C)
    votes = one_hot.cumsum(dim=1)
    return votes.argmax(dim=2).T


def knn_predict(x_query, x_train, y_train, k, kmax, n_classes):
    """Labels at one k. Asking for kmax >= k neighbours reuses the kernel compiled for
    kmax (K is part of the compiled code), then keeps the first k."""
    idx = nearest_training_points(x_query, x_train, kmax)[:, :k]
    votes = torch.nn.functional.one_hot(y_train[idx], n_classes).sum(dim=1)
    return votes.argmax(dim=1)


def sklearn_predict(x_query, x_train, y_train, k):
    """The reference: scikit-learn's exhaustive (brute force) k-NN classifier."""
    from sklearn.neighbors import KNeighborsClassifier
    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute")
    clf.fit(x_train.cpu().numpy(), y_train.cpu().numpy())
    return torch.from_numpy(clf.predict(x_query.cpu().numpy()))


def plot_accuracy(ks, accuracy, best_k, path, plt):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, accuracy, "o-", ms=3)
    ax.axvline(best_k, color="gray", ls="--", lw=1, label=f"best k = {best_k}")
    ax.set_xlabel("number of neighbours k")
    ax.set_ylabel("test accuracy")
    ax.set_title("k-NN on two moons: held-out accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_boundary(grid_x, grid_y, labels, x_train, y_train, k, path, plt):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.contourf(grid_x, grid_y, labels, levels=[-0.5, 0.5, 1.5], cmap="coolwarm", alpha=0.35)
    # A subsample of the training points is enough to see the classes, and stays legible.
    show = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))[:600]
    xs, ys = x_train[show].cpu(), y_train[show].cpu()
    ax.scatter(xs[:, 0], xs[:, 1], c=ys, cmap="coolwarm", s=6, edgecolors="none")
    ax.set_title(f"{k}-NN decision regions ({labels.size} grid queries)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(quick=False, device="cpu", out_dir=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    # Full size: 1e6 training points against 1.1e6 queries on a GPU; a tenth on a CPU.
    n_train, n_test, grid_side, kmax = ((600, 300, 120, 25) if quick else
                                        (1_000_000, 100_000, 1000, 51) if device == "cuda" else
                                        (100_000, 10_000, 200, 51))
    n_checked = min(n_test, 2000)     # scikit-learn's brute force is the slow part

    x, y = moons(n_train + n_test, noise=0.3, seed=0)
    x, y = x.to(device), y.to(device)
    x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]

    start = time.perf_counter()
    # One ArgKMin with the largest k gives the neighbours of every smaller k too.
    idx = nearest_training_points(x_test, x_train, kmax)
    predicted = majority_votes(y_train[idx], n_classes=2)                # (kmax, n_test)
    accuracy = (predicted == y_test).double().mean(dim=1).cpu()
    ks = np.arange(1, kmax + 1)
    best_k = int(ks[accuracy.argmax()])

    lo, hi = x_train.min(0).values - 0.5, x_train.max(0).values + 0.5
    gx = torch.linspace(lo[0], hi[0], grid_side, dtype=x.dtype, device=device)
    gy = torch.linspace(lo[1], hi[1], grid_side, dtype=x.dtype, device=device)
    grid_x, grid_y = torch.meshgrid(gx, gy, indexing="xy")
    grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    grid_labels = knn_predict(grid, x_train, y_train, best_k, kmax, n_classes=2)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    # The check: same labels as scikit-learn. Every k on the small problem; on the large
    # one scikit-learn is slow, so the best k and two even k (where votes can tie).
    checks = {}
    for k in (ks if quick else sorted({best_k, 2, 10})):
        k = int(k)
        ours = predicted[k - 1, :n_checked].cpu()
        ref = sklearn_predict(x_test[:n_checked], x_train, y_train, k)
        checks[k] = int((ours != ref).sum())

    figures = [out_dir / "accuracy_vs_k.png", out_dir / "decision_boundary.png"]
    plot_accuracy(ks, accuracy.numpy(), best_k, figures[0], plt)
    plot_boundary(grid_x.cpu().numpy(), grid_y.cpu().numpy(),
                  grid_labels.reshape(grid_side, grid_side).cpu().numpy(),
                  x_train, y_train, best_k, figures[1], plt)

    return {"n_train": n_train, "n_test": n_test, "n_grid": grid_side ** 2, "kmax": kmax,
            "accuracy": accuracy.tolist(), "best_k": best_k,
            "best_accuracy": float(accuracy.max()),
            "mismatches_vs_sklearn": checks, "n_checked": n_checked,
            "seconds": seconds, "device": device, "figures": [str(f) for f in figures]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problem, a few seconds")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", default=None, help="folder for the figures")
    args = parser.parse_args()
    r = run(quick=args.quick, device=args.device, out_dir=args.out)
    print(f"knn: {r['n_train']} training points, {r['n_test']} test + {r['n_grid']} grid "
          f"queries, k <= {r['kmax']}: {r['seconds']:.2f} s on {r['device']} "
          f"(best k = {r['best_k']}, accuracy {r['best_accuracy']:.3f}, "
          f"mismatches vs scikit-learn {r['mismatches_vs_sklearn']})")


if __name__ == "__main__":
    main()
