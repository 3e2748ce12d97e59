"""The methods taidpt trains and evaluates, one registered class per method (see ``registry``).

Importing this package registers the built-in methods, in the order ``--help`` lists them.
"""

from taidpt.methods import taidpt  # noqa: F401, I001 - registration order is listing order
from taidpt.methods import zeroshot  # noqa: F401
from taidpt.methods import dualcoop  # noqa: F401
from taidpt.methods import coop  # noqa: F401
from taidpt.methods.registry import CAPTIONS, IMAGES, Method, canonical_name, get_method, method_names, register

# The method a configuration or command that names none runs: the paper's.
DEFAULT_METHOD = taidpt.TaIDPT.name

__all__ = ["CAPTIONS", "DEFAULT_METHOD", "IMAGES", "Method", "canonical_name", "get_method", "method_names",
           "register"]
