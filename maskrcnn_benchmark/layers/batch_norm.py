"""Frozen batch norm: a fixed per-channel affine transform, as in upstream (Caffe2 AffineChannel)."""
import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are buffers, never trained.

    ``y = (x - running_mean) * weight / sqrt(running_var + eps) + bias`` on (N, C, H, W) inputs.
    Upstream has no epsilon (``eps=0``), which is what Caffe2-converted weights expect; pass
    ``eps=1e-5`` to match torchvision's FrozenBatchNorm2d. The buffers stay float32; under
    autocast the scale and shift are cast to the input's dtype instead of mutating the buffers.
    """

    def __init__(self, n, eps=0.0):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # torchvision / nn.BatchNorm2d checkpoints carry a counter that a frozen layer has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}"
