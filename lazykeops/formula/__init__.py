"""The formula language: interned nodes, the op registry, the parser and reductions.

Importing this package registers every op (the family modules fill `OPS` as they load).
"""

from . import elementwise, indexing, linalg, vector  # noqa: F401  (registration side effects)
from . import complex  # noqa: F401,E402  (after elementwise: its vjps use Rsqrt, Scalprod)
from . import softdtw  # noqa: F401,E402  (registration side effects)
from .node import CAT_I, CAT_J, CAT_P, OPS, Node, make, var  # noqa: F401
