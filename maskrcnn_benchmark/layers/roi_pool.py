"""ROIPool (Fast R-CNN: rounded RoI corners, +1 extent, max pooling) backed by ``_C``."""
from torch import nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from maskrcnn_benchmark.layers._C_loader import _C, float32_under_autocast


class _ROIPool(Function):
    """input (N, C, H, W), rois (K, 5) [batch_index, x1, y1, x2, y2] in image pixels -> (K, C, *output_size).

    The RoI corners are multiplied by ``spatial_scale`` and rounded; each bin takes the maximum of its pixels
    (0 for a bin outside the feature map). Only ``input`` receives a gradient, routed to each bin's maximum.
    """

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale):
        output_size = _pair(output_size)
        output, argmax = _C.roi_pool_forward(input, rois, spatial_scale, output_size[0], output_size[1])
        ctx.save_for_backward(input, rois, argmax)
        ctx.output_size = output_size
        ctx.spatial_scale = spatial_scale
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, rois, argmax = ctx.saved_tensors
        batch_size, channels, height, width = input.shape
        grad_input = _C.roi_pool_backward(
            grad_output,
            input,
            rois,
            argmax,
            ctx.spatial_scale,
            ctx.output_size[0],
            ctx.output_size[1],
            batch_size,
            channels,
            height,
            width,
        )
        return grad_input, None, None, None


def roi_pool(input, rois, output_size, spatial_scale):
    """Differentiable ROIPool, see :class:`_ROIPool`; runs in float32 under autocast."""
    input, rois = float32_under_autocast(input, rois)
    return _ROIPool.apply(input, rois, output_size, spatial_scale)


class ROIPool(nn.Module):
    """Module form of :func:`roi_pool`: ``forward(input, rois)`` with fixed output size and scale."""

    def __init__(self, output_size, spatial_scale):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input, rois):
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self):
        return f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"
