"""Ready tuned kernels: run the best known config of a template on numpy arrays.

``prepared`` keeps each problem's plan, program and buffers for a framework's hot path;
``ops`` are the numpy-shaped entry points (``tunesvc.matmul``, ``reduce``, ``attention``).
"""

from .ops import attention, matmul, reduce  # noqa: F401
from .prepared import Prepared, clear_cache, prepare, run_tuned  # noqa: F401
