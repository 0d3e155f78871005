"""Upstream's empty-tensor-safe layer wrappers.

PyTorch 1.0 could not run convolutions, transposed convolutions, batch norm or interpolation on
empty batches, so upstream wrapped each one. Current PyTorch handles empty batches itself; the
names remain so that code written against upstream's ``maskrcnn_benchmark.layers`` imports unchanged.
"""
from torch import nn
from torch.nn import functional as F

Conv2d = nn.Conv2d
ConvTranspose2d = nn.ConvTranspose2d
BatchNorm2d = nn.BatchNorm2d


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """``torch.nn.functional.interpolate`` with upstream's signature; works on empty batches."""
    return F.interpolate(input, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)
