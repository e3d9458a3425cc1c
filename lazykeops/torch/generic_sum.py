"""`from lazykeops.torch.generic_sum import generic_sum`, as in the 2018 KeOps README."""

from ..routines.generic import make_generic
from .genred import Genred

generic_sum = make_generic(Genred, "Sum")
