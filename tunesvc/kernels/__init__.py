"""Ready tuned kernels: run the best known config of a template on numpy arrays.

``prepared`` keeps each problem's plan, program and buffers for a framework's hot path;
``ops`` are the numpy-shaped entry points (``tunesvc.matmul``, ``reduce``, ``attention``,
``gemv_q``); ``quant`` holds the quantized weights ``gemv_q`` takes (``quantize``).
"""

from .ops import attention, gemv_q, matmul, reduce  # noqa: F401
from .quant import QuantizedMatrix, quantize  # noqa: F401
from .prepared import Prepared, clear_cache, prepare, run_tuned  # noqa: F401
