"""Layers: wrappers of the ``_C`` kernels, frozen batch norm, losses and conv helpers (upstream names)."""
from .batch_norm import FrozenBatchNorm2d
from .misc import BatchNorm2d, Conv2d, ConvTranspose2d, interpolate
from .nms import batched_nms, nms
from .roi_align import ROIAlign, roi_align
from .roi_pool import ROIPool, roi_pool
from .sigmoid_focal_loss import SigmoidFocalLoss
from .smooth_l1_loss import smooth_l1_loss

__all__ = [
    "nms",
    "batched_nms",
    "roi_align",
    "ROIAlign",
    "roi_pool",
    "ROIPool",
    "smooth_l1_loss",
    "Conv2d",
    "ConvTranspose2d",
    "interpolate",
    "BatchNorm2d",
    "FrozenBatchNorm2d",
    "SigmoidFocalLoss",
]
