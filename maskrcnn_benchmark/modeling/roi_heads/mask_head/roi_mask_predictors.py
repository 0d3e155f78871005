"""Mask predictors, registered in ``registry.ROI_MASK_PREDICTOR``: per-class mask logits.

Both return (R, NUM_CLASSES, h', w') logits. Weights: Kaiming normal (fan_out, relu; Caffe2's
MSRAFill), zero biases.
"""
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.layers import Conv2d, ConvTranspose2d
from maskrcnn_benchmark.modeling import registry


def _init_msra(module):
    for name, param in module.named_parameters():
        if "bias" in name:
            nn.init.constant_(param, 0)
        elif "weight" in name:
            nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")


@registry.ROI_MASK_PREDICTOR.register("MaskRCNNC4Predictor")
class MaskRCNNC4Predictor(nn.Module):
    """2x2 stride-2 transposed conv to CONV_LAYERS[-1] channels + ReLU ("conv5_mask"), then a
    1x1 conv to NUM_CLASSES logits ("mask_fcn_logits"): (R, C, h, w) -> (R, NUM_CLASSES, 2h, 2w).
    """

    def __init__(self, cfg, in_channels):
        super(MaskRCNNC4Predictor, self).__init__()
        num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
        dim_reduced = cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1]
        self.conv5_mask = ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        self.mask_fcn_logits = Conv2d(dim_reduced, num_classes, 1, 1, 0)
        _init_msra(self)

    def forward(self, x):
        x = F.relu(self.conv5_mask(x))
        return self.mask_fcn_logits(x)


@registry.ROI_MASK_PREDICTOR.register("MaskRCNNConv1x1Predictor")
class MaskRCNNConv1x1Predictor(nn.Module):
    """A 1x1 conv to NUM_CLASSES logits ("mask_fcn_logits"):
    (R, C, h, w) -> (R, NUM_CLASSES, h, w)."""

    def __init__(self, cfg, in_channels):
        super(MaskRCNNConv1x1Predictor, self).__init__()
        num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
        self.mask_fcn_logits = Conv2d(in_channels, num_classes, 1, 1, 0)
        _init_msra(self)

    def forward(self, x):
        return self.mask_fcn_logits(x)


def make_roi_mask_predictor(cfg, in_channels):
    """The predictor named by MODEL.ROI_MASK_HEAD.PREDICTOR."""
    return registry.ROI_MASK_PREDICTOR[cfg.MODEL.ROI_MASK_HEAD.PREDICTOR](cfg, in_channels)
