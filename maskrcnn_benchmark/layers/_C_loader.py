"""The compiled kernels ``maskrcnn_benchmark._C`` and how to feed them under autocast.

Importing this module raises an actionable ImportError when the extension was not built.
"""
import torch

try:
    from maskrcnn_benchmark import _C
except ImportError as error:
    raise ImportError(
        "maskrcnn_benchmark._C (the compiled ROIAlign/ROIPool/NMS/SigmoidFocalLoss kernels) could not be imported: "
        f"{error}. Build it with `bash tests/run.sh` (sets up .venv and builds everything) or, inside your "
        "environment, `python setup.py build develop` (or `pip install -e . --no-build-isolation`). If it was "
        "built against another torch version, remove build/ and rebuild."
    ) from error

__all__ = ["_C", "float32_under_autocast"]


def float32_under_autocast(*tensors):
    """Casts half-precision tensors to float32 where autocast is enabled for their device.

    The kernels run in float32 or float64 only (upstream's ``amp.float_function``); outside autocast the tensors
    are returned unchanged. The cast is differentiable, so gradients flow back in the original dtype.
    """
    return tuple(
        t.float() if t.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(t.device.type) else t
        for t in tensors
    )
