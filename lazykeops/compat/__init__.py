"""Compatibility layers for code written against other libraries: `pykeops_modules` serves
pykeops's module names (`lazykeops.install_as_pykeops()`), `pykeops_functions` its
top-level functions and settings."""
