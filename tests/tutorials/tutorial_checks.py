"""What every tutorial test shares: loading a script of tutorials/ by its path (they are
scripts, not a package), and checking the figures a run wrote."""

import importlib.util
from pathlib import Path

import matplotlib.image
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def load_tutorial(name):
    spec = importlib.util.spec_from_file_location(f"tutorial_{name}",
                                                  ROOT / "tutorials" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_figures(figures, folder, count):
    """`count` PNG files in `folder`, each an image with more than one distinct value."""
    assert len(figures) == count
    for png in figures:
        assert Path(png).is_file() and Path(png).parent == Path(folder)
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and len(np.unique(image)) > 1
