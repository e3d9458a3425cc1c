"""`from lazykeops.torch.generic_logsumexp import generic_logsumexp`, as in the 2018 README."""

from ..routines.generic import make_generic
from .genred import Genred

generic_logsumexp = make_generic(Genred, "LogSumExp")
