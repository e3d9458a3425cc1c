"""Front ends: the framework-agnostic Genred core and the torch/numpy backends."""
