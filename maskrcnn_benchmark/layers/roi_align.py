"""ROIAlign (Detectron v1: no half-pixel offset, RoI size clamped to at least 1 pixel) backed by ``_C``."""
from torch import nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from maskrcnn_benchmark.layers._C_loader import _C, float32_under_autocast


class _ROIAlign(Function):
    """input (N, C, H, W), rois (K, 5) [batch_index, x1, y1, x2, y2] in image pixels -> (K, C, *output_size).

    The RoI corners are multiplied by ``spatial_scale`` (feature-map pixels per image pixel). Each bin averages
    ``sampling_ratio`` x ``sampling_ratio`` bilinear samples (0: ceil(roi_size / output_size) per axis).
    Only ``input`` receives a gradient.
    """

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio):
        output_size = _pair(output_size)
        ctx.save_for_backward(rois)
        ctx.output_size = output_size
        ctx.spatial_scale = spatial_scale
        ctx.sampling_ratio = sampling_ratio
        ctx.input_shape = input.size()
        return _C.roi_align_forward(input, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (rois,) = ctx.saved_tensors
        batch_size, channels, height, width = ctx.input_shape
        grad_input = _C.roi_align_backward(
            grad_output,
            rois,
            ctx.spatial_scale,
            ctx.output_size[0],
            ctx.output_size[1],
            batch_size,
            channels,
            height,
            width,
            ctx.sampling_ratio,
        )
        return grad_input, None, None, None, None


def roi_align(input, rois, output_size, spatial_scale, sampling_ratio):
    """Differentiable ROIAlign, see :class:`_ROIAlign`; runs in float32 under autocast."""
    input, rois = float32_under_autocast(input, rois)
    return _ROIAlign.apply(input, rois, output_size, spatial_scale, sampling_ratio)


class ROIAlign(nn.Module):
    """Module form of :func:`roi_align`: ``forward(input, rois)`` with fixed output size, scale and sampling."""

    def __init__(self, output_size, spatial_scale, sampling_ratio):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input, rois):
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio)

    def __repr__(self):
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio})"
        )
