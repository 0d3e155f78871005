"""Mixed precision selected by the DTYPE config key, on torch.amp (upstream used apex.amp).

"float32" runs in full precision; "float16" and "bfloat16" run the forward pass under
``torch.autocast`` in that dtype. float16 training also scales the loss with a
``torch.amp.GradScaler`` (apex's dynamic loss scaling); bfloat16 has float32's range and needs none.
"""
import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def autocast_dtype(dtype_name):
    """torch dtype of a DTYPE value; ValueError naming the valid values for anything else."""
    if dtype_name not in DTYPES:
        raise ValueError(
            f"DTYPE '{dtype_name}' is not supported; set DTYPE to one of {', '.join(DTYPES)}"
        )
    return DTYPES[dtype_name]


def autocast(dtype_name, device):
    """Context manager: ``torch.autocast`` on ``device``'s type in ``dtype_name``; disabled for float32."""
    dtype = autocast_dtype(dtype_name)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32)


def make_grad_scaler(dtype_name, device):
    """A GradScaler for float16 training on ``device``, else None (no loss scaling needed)."""
    if autocast_dtype(dtype_name) != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)
