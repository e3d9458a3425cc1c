"""`install_as_pykeops()`: the module names of pykeops 2.3, served by lazykeops.

After it, `import pykeops`, `from pykeops.torch import LazyTensor`,
`from pykeops.torch.cluster import grid_cluster`, `import pykeops.config`, ... give
lazykeops's objects: the very same classes and functions as `lazykeops.torch` etc., so
`isinstance` agrees whichever name a client used. This is PyMySQL's `install_as_MySQLdb()`
convention, done with an import hook rather than by copying modules into `sys.modules`:

- a finder on `sys.meta_path` answers for the names in `MODULES` only, so
  `importlib.util.find_spec("pykeops")` finds it and an unknown `pykeops.x` is the usual
  "No module named" error; it comes first, so an installed real pykeops is shadowed;
- each pykeops module is a `PyKeOpsModule` whose attributes are looked up when read, in
  the lazykeops module that serves it, so names other work adds to lazykeops later
  (`KernelSolve`, `ComplexLazyTensor`, ...) appear without touching this table, and a name
  lazykeops lacks is an AttributeError (an ImportError for `from ... import`) that names it,
  while the module's other names keep working;
- nothing is imported before it is asked for: `import pykeops` needs neither torch nor
  numpy; `import pykeops.torch.cluster` fails, naming the lazykeops module, where lazykeops
  has no `lazykeops.torch.cluster`.

It refuses (LazyKeOpsError) when a real pykeops is already imported: its classes would live
beside ours and `isinstance` would disagree. Calling it again is harmless. `uninstall()`
takes the hook and the modules away again (for tests; objects clients took stay valid).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types

from ..errors import LazyKeOpsError

_FUNCS = "lazykeops.compat.pykeops_functions"


class Ref:
    """A pykeops name served by the attribute `attr` of the lazykeops module `module`;
    with `call` (a tuple of arguments), by what that function returns when called."""

    def __init__(self, module, attr, call=None):
        self.module, self.attr, self.call = module, attr, call

    def resolve(self):
        value = getattr(importlib.import_module(self.module), self.attr)
        return value if self.call is None else value(*self.call)


def _computed(attr, *args):
    """A value computed each time it is read (pykeops computes these at import)."""
    return Ref(_FUNCS, attr, call=args)


class Alias:
    """One pykeops module: `source` serves all its public names, `names` the others."""

    def __init__(self, package=False, source=None, names=None):
        self.package, self.source, self.names = package, source, dict(names or {})


def _refs(module, names):
    return {name: Ref(module, name) for name in names.split()}


def _front_end(fw):
    """The modules of pykeops.torch or pykeops.numpy that clients import."""
    lk, pk = f"lazykeops.{fw}", f"pykeops.{fw}"
    return {
        pk: Alias(True, source=lk),
        f"{pk}.cluster": Alias(True, source=f"{lk}.cluster"),
        f"{pk}.lazytensor": Alias(True),
        f"{pk}.lazytensor.LazyTensor": Alias(names=_refs(
            lk, "LazyTensor ComplexLazyTensor Vi Vj Pm")),
        f"{pk}.generic": Alias(True),
        f"{pk}.generic.generic_red": Alias(names=_refs(lk, "Genred")),
        f"{pk}.generic.generic_ops": Alias(names=_refs(
            lk, "generic_sum generic_logsumexp generic_argmin generic_argkmin")),
        f"{pk}.operations": Alias(names=_refs(lk, "KernelSolve")),
        f"{pk}.test_install": Alias(names=_refs(_FUNCS, f"test_{fw}_bindings")),
    }


MODULES = {
    "pykeops": Alias(True, names={
        "__version__": Ref(_FUNCS, "PYKEOPS_API_VERSION"),
        "lazykeops_version": Ref(_FUNCS, "LAZYKEOPS_VERSION"),
        "verbose": _computed("verbose"),
        "numpy_found": _computed("found", "numpy"),
        "torch_found": _computed("found", "torch"),
        **_refs(_FUNCS, "set_verbose clean_pykeops check_health get_build_folder "
                        "set_build_folder test_torch_bindings test_numpy_bindings "
                        "show_cuda_status"),
    }),
    "pykeops.config": Alias(names={
        "gpu_available": _computed("gpu_available"),
        "numpy_found": _computed("found", "numpy"),
        "torch_found": _computed("found", "torch"),
        **_refs(_FUNCS, "get_build_folder"),
    }),
    "pykeops.common": Alias(True),
    "pykeops.common.lazy_tensor": Alias(names={
        "GenericLazyTensor": Ref("lazykeops.tensor.lazy", "LazyTensor"),
        "ComplexGenericLazyTensor": Ref("lazykeops.tensor.lazy_complex", "ComplexLazyTensor"),
    }),
    **_front_end("torch"),
    **_front_end("numpy"),
}


class PyKeOpsModule(types.ModuleType):
    """A pykeops module whose attributes are lazykeops's, looked up when first read."""

    def __getattr__(self, attr):
        name = self.__name__
        alias = MODULES[name]
        if f"{name}.{attr}" in MODULES:  # a submodule: `import pykeops; pykeops.torch`
            try:
                return importlib.import_module(f"{name}.{attr}")
            except ImportError as err:
                raise AttributeError(f"module '{name}' has no attribute '{attr}': {err}",
                                     name=attr, obj=self) from None
        if attr == "__all__":  # for `from pykeops.torch import *`: what resolves now
            return _public_names(alias)
        value = _lookup(name, alias, attr)
        ref = alias.names.get(attr)
        if ref is None or ref.call is None:  # computed values are read afresh every time
            setattr(self, attr, value)
        return value

    def __dir__(self):
        alias = MODULES[self.__name__]
        names = set(super().__dir__()) | set(alias.names)
        if alias.source is not None:
            names |= {n for n in dir(importlib.import_module(alias.source))
                      if not n.startswith("_")}
        prefix = self.__name__ + "."
        names |= {n[len(prefix):] for n in MODULES
                  if n.startswith(prefix) and "." not in n[len(prefix):]}
        return sorted(names)


def _public_names(alias):
    names = [n for n, ref in alias.names.items() if not n.startswith("_") and ref.call is None]
    if alias.source is not None:
        source = importlib.import_module(alias.source)
        names += getattr(source, "__all__", [n for n in vars(source) if not n.startswith("_")])
    return [n for n in names if _resolves(alias, n)]


def _resolves(alias, attr):
    try:
        _lookup("", alias, attr)
        return True
    except AttributeError:
        return False


def _lookup(name, alias, attr):
    ref = alias.names.get(attr)
    try:
        if ref is not None:
            return ref.resolve()
        if alias.source is not None and not attr.startswith("_"):
            return getattr(importlib.import_module(alias.source), attr)
    except (AttributeError, ImportError):
        where = f"{ref.module}.{ref.attr}" if ref is not None else f"{alias.source}.{attr}"
        raise AttributeError(f"module '{name}' has no attribute '{attr}': lazykeops, "
                             f"installed as pykeops, does not provide {where}",
                             name=attr) from None
    raise AttributeError(f"module '{name}' has no attribute '{attr}'", name=attr)


class PyKeOpsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and creates the modules of MODULES, and no others."""

    def find_spec(self, fullname, path=None, target=None):
        alias = MODULES.get(fullname)
        if alias is None:
            return None  # not ours: the usual "No module named ..." for a pykeops.x
        return importlib.util.spec_from_loader(fullname, self, is_package=alias.package)

    def create_module(self, spec):
        return PyKeOpsModule(spec.name)

    def exec_module(self, module):
        # ImportErrors below then point at this file, which says who serves the module.
        module.__file__ = __file__
        source = MODULES[module.__name__].source
        if source is None:
            return
        try:
            importlib.import_module(source)
        except ModuleNotFoundError as err:
            if err.name != source:
                raise
            raise ModuleNotFoundError(f"No module named '{module.__name__}': lazykeops, "
                                      f"installed as pykeops, has no {source} to serve it",
                                      name=module.__name__) from None


_FINDER = PyKeOpsFinder()


def _foreign_pykeops():
    """Names of sys.modules that hold a pykeops module not made here."""
    return sorted(n for n, m in list(sys.modules.items())
                  if (n == "pykeops" or n.startswith("pykeops."))
                  and not isinstance(m, PyKeOpsModule))


def install():
    """Serve pykeops's module names with lazykeops from now on; returns the `pykeops` module."""
    foreign = _foreign_pykeops()
    if foreign:
        module = sys.modules.get(foreign[0])
        where = getattr(module, "__file__", None) or repr(module)
        raise LazyKeOpsError(
            f"install_as_pykeops(): a pykeops is already imported ({foreign[0]} from {where}); "
            "its LazyTensor class would coexist with lazykeops's and isinstance checks would "
            "disagree. Call lazykeops.install_as_pykeops() before anything imports pykeops "
            "(e.g. first thing in your script), or use the real pykeops only")
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return importlib.import_module("pykeops")


def uninstall():
    """Stop serving pykeops's names: remove the hook and the pykeops modules made here."""
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name, module in list(sys.modules.items()):
        if isinstance(module, PyKeOpsModule):
            del sys.modules[name]
