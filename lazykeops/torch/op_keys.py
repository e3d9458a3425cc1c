"""The keys of torch/custom_ops.py's op: a GenredCore as JSON text, and back.

A key is the core's full description (formula nodes in post-order, argument table,
reduction and options), so that a compiled graph holding it is self-contained. This
module does not import torch._dynamo, so that torch Genred can key its core when it is
built (Dynamo then reads the key as an attribute: torch 2.11's cannot pass the core to
an assume_constant_result function).

The registry holds the cores keyed in this process weakly (a Genred built in a loop must
not live forever), and the cores rebuilt from a key alone (a backward graph loaded from
torch's on-disk caches, whose gradient cores were never built here) strongly: nothing
else holds those.
"""

import json
import weakref

from ..formula.aliases import Alias
from ..formula.node import make
from ..runtime import genred
from ..tensor import lazy_reduce

_KEYED = weakref.WeakValueDictionary()  # key -> GenredCore built by this process
_REBUILT = {}  # key -> GenredCore rebuilt from its key


def core_key(core):
    """The JSON text describing `core`; cached on the core."""
    key = core.__dict__.get("_op_key")
    if key is None:
        index, entries = {}, []
        for f in core.formulas:
            for node in f.walk():
                if id(node) not in index:
                    index[id(node)] = len(entries)
                    entries.append([node.op, node.params, [index[id(a)] for a in node.args]])
        key = core._op_key = json.dumps({
            "formulas": [index[id(f)] for f in core.formulas], "nodes": entries,
            "args": [[a.cat, a.dim] for a in core.aliases],
            "reduction": core.reduction.name, "axis": core.axis, "k": core.k,
            "options": core.options, "framework": core.framework, "text": core.text},
            separators=(",", ":"))
        _KEYED.setdefault(key, core)
    return key


def core_of(key):
    """The GenredCore of `key`: one keyed in this process, else rebuilt from the text."""
    core = _KEYED.get(key)
    if core is None:
        core = _REBUILT.get(key)
    if core is None:
        d = json.loads(key)
        nodes = build_nodes(d["nodes"])
        aliases = [Alias(f"var{p}", p, cat, dim) for p, (cat, dim) in enumerate(d["args"])]
        core = genred.GenredCore([nodes[p] for p in d["formulas"]], aliases, d["reduction"],
                                 d["axis"], d["k"], framework=d["framework"],
                                 text=d["text"], **d["options"])
        core._op_key = key
        _REBUILT[key] = core
    return core


def _tuples(p):
    return tuple(_tuples(q) for q in p) if isinstance(p, list) else p


def build_nodes(entries):
    """Formula nodes from post-order (op, params, child indices) entries; the LazyTensor
    ops that only exist symbolically (Grad, ...) are expanded as lower() expands them."""
    nodes = []
    for op, params, children in entries:
        args = [nodes[c] for c in children]
        if op in lazy_reduce.DERIVATIVES:
            nodes.append(lazy_reduce.DERIVATIVES[op](*args))
        else:
            nodes.append(make(op, *args, params=_tuples(params)))
    return nodes
