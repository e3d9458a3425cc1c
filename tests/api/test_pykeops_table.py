"""docs/pykeops_api.md against the code: each row resolves as its status says, through
install_as_pykeops() in a child process (the shim changes sys.modules); and, given a Python
with the real pykeops, the table lists every name pykeops 2.3 has."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "pykeops_api.md"
STATUSES = {"same", "no effect", "differs", "refused", "absent"}


def table_rows():
    rows, scope = [], None
    for line in TABLE.read_text().splitlines():
        heading = re.match(r"### `(.+)`", line)
        if heading:
            scope = heading.group(1)
        cells = re.match(r"\| `([^`]+)` \| ([a-z ]+) \| (.*) \|$", line)
        if cells:
            rows.append((scope, cells.group(1), cells.group(2), cells.group(3)))
    return rows


# Run in a child: resolve every row where pykeops's clients would look for it.
CHECK = r"""
import importlib, inspect, json, sys
import lazykeops
from lazykeops.errors import LazyKeOpsError
lazykeops.install_as_pykeops()
problems, keywords = [], []
for scope, name, status in json.loads(sys.stdin.read()):
    if scope.endswith("(...)"):  # a keyword of Genred / KernelSolve, init or call
        if name not in ("formula", "aliases", "varinvalias", "args"):
            keywords.append((scope, name, status))
        continue
    if scope in ("LazyTensor", "ComplexLazyTensor"):
        owners = [getattr(importlib.import_module("pykeops." + fw), scope)
                  for fw in ("torch", "numpy")]
    else:
        owners = [importlib.import_module(scope)]
    for owner in owners:
        present = hasattr(owner, name)
        if present != (status != "absent"):
            problems.append(f"{scope}.{name} ({status}): present={present}")
        if status == "refused" and present and callable(getattr(owner, name)) \
                and scope == "LazyTensor" and name != "ranges":
            try:
                getattr(owner, name)(owner.__new__(owner))
                problems.append(f"{scope}.{name} is marked refused but did not raise")
            except LazyKeOpsError:
                pass
# Keywords: each accepted at pykeops's default value; a refused one given a value raises.
import numpy as np
import torch
DEFAULTS = {"reduction_op": "Sum", "axis": 0, "dtype": None, "opt_arg": None, "formula2": None,
            "cuda_type": None, "dtype_acc": "auto", "use_double_acc": False,
            "sum_scheme": "auto", "enable_chunks": True, "rec_multVar_highdim": None,
            "use_fast_math": True, "backend": "auto", "device_id": -1, "ranges": None,
            "out": None, "alpha": 1e-10, "eps": 1e-6}
x = np.random.default_rng(0).standard_normal((5, 3))
for fw, arrays in (("torch", [torch.from_numpy(x)] * 3), ("numpy", [x] * 3)):
    module = importlib.import_module("pykeops." + fw)
    for scope, name, status in keywords:
        if name not in DEFAULTS:
            problems.append(f"{scope} keyword {name}: no default known to this test")
            continue
        cls = getattr(module, scope.split("(")[0])
        args = ("Exp(-SqDist(X,Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(3)"]) + \
            (("B",) if cls.__name__ == "KernelSolve" else ())
        init = {name: DEFAULTS[name]} if scope.count("(") == 1 else {}
        call = {name: DEFAULTS[name]} if scope.count("(") == 2 else {}
        init["axis"] = 1  # over j, so that B is a j-variable (KernelSolve's unknown)
        try:
            cls(*args, **init)(*arrays, **call)
        except Exception as err:
            problems.append(f"{fw} {scope} keyword {name}={DEFAULTS[name]!r}: {err!r}")
        if status == "refused":
            try:
                cls(*args, axis=1)(*arrays, **{name: (arrays[0],) * 6})
                problems.append(f"{fw} {scope} keyword {name} is refused but was taken")
            except LazyKeOpsError:
                pass
print(json.dumps(problems))
"""


def test_every_row_resolves_as_its_status_says():
    rows = table_rows()
    assert len(rows) > 200
    assert {status for _, _, status, _ in rows} <= STATUSES
    for scope, name, status, note in rows:
        assert status == "same" or note.strip(), f"{scope}.{name} is {status} without a reason"
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True,
                            text=True, timeout=300,
                            input=json.dumps([r[:3] for r in rows]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif("LAZYKEOPS_PYKEOPS_PYTHON" not in os.environ,
                    reason="needs LAZYKEOPS_PYKEOPS_PYTHON: a Python with the real pykeops")
def test_table_lists_every_pykeops_name():
    out = subprocess.run([os.environ["LAZYKEOPS_PYKEOPS_PYTHON"],
                          str(ROOT / "tests" / "api" / "pykeops_inventory.py")],
                         cwd="/", capture_output=True, text=True, timeout=300, check=True)
    names = {tuple(line.split()) for line in out.stdout.splitlines()
             if re.fullmatch(r"\S+ \S+", line)}
    listed = {(scope, name) for scope, name, _, _ in table_rows()}
    assert names - listed == set()


@pytest.mark.skipif("LAZYKEOPS_PYKEOPS_PYTHON" not in os.environ,
                    reason="needs LAZYKEOPS_PYKEOPS_PYTHON: a Python with the real pykeops")
def test_methods_take_pykeops_parameter_names():
    """Every parameter of a pykeops LazyTensor method can be given by the same name (and
    left out where pykeops has a default) on lazykeops's."""
    import inspect

    import lazykeops.torch as lk

    out = subprocess.run([os.environ["LAZYKEOPS_PYKEOPS_PYTHON"],
                          str(ROOT / "tests" / "api" / "pykeops_inventory.py"), "--signatures"],
                         cwd="/", capture_output=True, text=True, timeout=300, check=True)
    problems = []
    for cls_name, name, params in json.loads(out.stdout.strip().splitlines()[-1]):
        method = getattr(getattr(lk, cls_name), name, None)
        if not callable(method):
            continue  # an attribute here (listed as such in the table)
        sig = inspect.signature(method)
        if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            continue
        for param, has_default in params:
            mine = sig.parameters.get(param)
            if mine is None:
                problems.append(f"{cls_name}.{name}: no parameter {param}")
            elif has_default and mine.default is mine.empty:
                problems.append(f"{cls_name}.{name}: {param} has no default")
    assert problems == [], "\n".join(problems)


def compare(a, b, path=""):
    """Differences between two results of tests/api/pykeops_parity.py."""
    if isinstance(a, dict) and "error" in a or isinstance(b, dict) and "error" in b:
        return [] if (isinstance(a, dict) and "error" in a) == (isinstance(b, dict) and "error"
                                                                in b) else [f"{path}: {a} vs {b}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a["shape"] != b["shape"]:
            return [f"{path}: shape {a['shape']} vs {b['shape']}"]
        import numpy as np

        va, vb = np.asarray(a["values"], dtype=float), np.asarray(b["values"], dtype=float)
        ok = np.allclose(va, vb, rtol=1e-9, atol=1e-12, equal_nan=True)
        return [] if ok else [f"{path}: values differ by {np.nanmax(np.abs(va - vb)):.3g}"]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for k, (u, v) in enumerate(zip(a, b)) for d in compare(u, v, f"{path}[{k}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


@pytest.mark.skipif("LAZYKEOPS_PYKEOPS_PYTHON" not in os.environ,
                    reason="needs LAZYKEOPS_PYKEOPS_PYTHON: a Python with the real pykeops")
def test_same_programs_give_the_same_results():
    script = str(ROOT / "tests" / "api" / "pykeops_parity.py")
    runs = {}
    for library, python, cwd in (("pykeops", os.environ["LAZYKEOPS_PYKEOPS_PYTHON"], "/"),
                                 ("lazykeops", sys.executable, ROOT)):
        out = subprocess.run([python, script, library], cwd=cwd, capture_output=True,
                             text=True, timeout=1800, check=True)
        runs[library] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs["pykeops"].keys() == runs["lazykeops"].keys()
    problems = [d for name in runs["pykeops"]
                for d in compare(runs["pykeops"][name], runs["lazykeops"][name], name)]
    assert problems == [], "\n".join(problems)
