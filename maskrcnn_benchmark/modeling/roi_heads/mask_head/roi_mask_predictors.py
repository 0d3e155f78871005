"""Mask predictors: per-class mask logits.

All return (R, NUM_CLASSES, h', w') logits, or, given the RoIs' ``labels``, (R, 1, h', w'): only
the channel of each RoI's own class, which is all the loss and the post-processor read (the same
values, computed for one class instead of NUM_CLASSES: at test time, with thousands of
detections per image, the class-specific 1x1 conv was most of the mask head's time). Weights:
Kaiming normal (fan_out, relu; Caffe2's MSRAFill), zero biases. The upstream predictors are
registered in ``registry.ROI_MASK_PREDICTOR`` (a registered predictor whose forward takes no
``labels`` gets all the channels); LST's MaskXRCNNC4Predictor needs the transferred class weights
at call time, so it is not a registry entry: MODEL.ROI_MASK_HEAD.USE_BBOX2MASK selects it (as in
the authors' code).
"""
import logging

import torch
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.layers import Conv2d, ConvTranspose2d
from maskrcnn_benchmark.modeling import registry


def class_channel_logits(x, weight, bias, labels):
    """A 1x1 conv with ``weight`` (C, M, 1, 1) and ``bias`` (C,) or None on ``x`` (R, M, h, w):
    (R, C, h, w) logits, or with ``labels`` (R,) int64 only channel labels[r] of RoI r:
    (R, 1, h, w)."""
    if labels is None:
        return F.conv2d(x, weight, bias)
    logits = torch.einsum("rmhw,rm->rhw", x, weight[labels, :, 0, 0])
    if bias is not None:
        logits = logits + bias[labels, None, None]
    return logits[:, None]


def _init_msra(module):
    for name, param in module.named_parameters():
        if "bias" in name:
            nn.init.constant_(param, 0)
        elif "weight" in name:
            nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")


@registry.ROI_MASK_PREDICTOR.register("MaskRCNNC4Predictor")
class MaskRCNNC4Predictor(nn.Module):
    """2x2 stride-2 transposed conv to CONV_LAYERS[-1] channels + ReLU ("conv5_mask"), then a
    1x1 conv to NUM_CLASSES logits ("mask_fcn_logits"): (R, C, h, w) -> (R, NUM_CLASSES, 2h, 2w),
    or (R, 1, 2h, 2w) given the RoIs' (R,) ``labels`` (each RoI's own class).
    """

    def __init__(self, cfg, in_channels):
        super(MaskRCNNC4Predictor, self).__init__()
        num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
        dim_reduced = cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1]
        self.conv5_mask = ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        self.mask_fcn_logits = Conv2d(dim_reduced, num_classes, 1, 1, 0)
        _init_msra(self)

    def forward(self, x, labels=None):
        x = F.relu(self.conv5_mask(x))
        return class_channel_logits(x, self.mask_fcn_logits.weight, self.mask_fcn_logits.bias, labels)


@registry.ROI_MASK_PREDICTOR.register("MaskRCNNConv1x1Predictor")
class MaskRCNNConv1x1Predictor(nn.Module):
    """A 1x1 conv to NUM_CLASSES logits ("mask_fcn_logits"):
    (R, C, h, w) -> (R, NUM_CLASSES, h, w), or (R, 1, h, w) given the RoIs' (R,) ``labels``."""

    def __init__(self, cfg, in_channels):
        super(MaskRCNNConv1x1Predictor, self).__init__()
        num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
        self.mask_fcn_logits = Conv2d(in_channels, num_classes, 1, 1, 0)
        _init_msra(self)

    def forward(self, x, labels=None):
        return class_channel_logits(x, self.mask_fcn_logits.weight, self.mask_fcn_logits.bias, labels)


class MaskXRCNNC4Predictor(nn.Module):
    """LST's Mask^X R-CNN predictor (paper §3.2): class mask filters come from the box classifier.

    "conv5_mask" (2x2 stride-2 transposed conv to CONV_LAYERS[-1] = M channels + ReLU, as in
    MaskRCNNC4Predictor), then a bias-free 1x1 conv whose C filters are the rows of
    ``class_weights`` = T(cls_score.weight), shape (C, M). With MODEL.ROI_MASK_HEAD.USE_MLPMASK a
    class-agnostic "MLP_mask" = Linear(M * S * S, S * S) (S = RESOLUTION) maps the flattened
    deconv output to one (S, S) mask that is added to every class channel.
    (R, in_channels, S/2, S/2) -> (R, C, S, S), or (R, 1, S, S) when the RoIs' labels are given:
    only the channel of each RoI's own class; its memory then does not grow with C (1,231 classes
    on LVIS).
    """

    def __init__(self, cfg, in_channels):
        super(MaskXRCNNC4Predictor, self).__init__()
        dim_reduced = cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1]
        self.resolution = cfg.MODEL.ROI_MASK_HEAD.RESOLUTION
        self.conv5_mask = ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        if cfg.MODEL.ROI_MASK_HEAD.USE_MLPMASK:
            self.MLP_mask = nn.Linear(dim_reduced * self.resolution ** 2, self.resolution ** 2)
        else:
            self.MLP_mask = None
        _init_msra(self)

    def forward(self, x, class_weights, labels=None):
        """
        Arguments:
            x (Tensor): (R, in_channels, S/2, S/2) mask-head features.
            class_weights (Tensor): (C, M) per-class mask filters, T(cls_score.weight).
            labels (Tensor, optional): (R,) int64 class of each RoI.

        Returns:
            mask_logits (Tensor): (R, C, S, S), or (R, 1, S, S) (channel labels[r] of RoI r)
            when ``labels`` is given.
        """
        x = F.relu(self.conv5_mask(x))
        if class_weights.dim() != 2 or class_weights.shape[1] != x.shape[1]:
            raise ValueError(
                "MaskXRCNNC4Predictor needs class_weights of shape (C, {}) (the transfer "
                "function's output), got {}; check that MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1] "
                "matches bbox2mask".format(x.shape[1], tuple(class_weights.shape))
            )
        mask_logits = class_channel_logits(x, class_weights[:, :, None, None], None, labels)
        if self.MLP_mask is not None:
            if tuple(x.shape[2:]) != (self.resolution, self.resolution):
                raise ValueError(
                    "MLP_mask expects {0}x{0} deconv outputs (MODEL.ROI_MASK_HEAD.RESOLUTION), "
                    "got {1}; set RESOLUTION to twice the mask pooler's "
                    "resolution".format(self.resolution, tuple(x.shape[2:]))
                )
            agnostic_mask = self.MLP_mask(x.flatten(start_dim=1))
            mask_logits = mask_logits + agnostic_mask.view(-1, 1, self.resolution, self.resolution)
        return mask_logits


def make_roi_mask_predictor(cfg, in_channels):
    """The predictor named by MODEL.ROI_MASK_HEAD.PREDICTOR, or MaskXRCNNC4Predictor whenever
    MODEL.ROI_MASK_HEAD.USE_BBOX2MASK is set (whatever PREDICTOR says, as the authors did)."""
    head_cfg = cfg.MODEL.ROI_MASK_HEAD
    if head_cfg.USE_MLPMASK and not head_cfg.USE_BBOX2MASK:
        raise ValueError(
            "MODEL.ROI_MASK_HEAD.USE_MLPMASK is only implemented by the weight-transfer predictor; "
            "set MODEL.ROI_MASK_HEAD.USE_BBOX2MASK True as well, or USE_MLPMASK False"
        )
    if head_cfg.USE_BBOX2MASK:
        logging.getLogger(__name__).info(
            "MODEL.ROI_MASK_HEAD.USE_BBOX2MASK is set: using MaskXRCNNC4Predictor instead of %s",
            head_cfg.PREDICTOR,
        )
        return MaskXRCNNC4Predictor(cfg, in_channels)
    return registry.ROI_MASK_PREDICTOR[head_cfg.PREDICTOR](cfg, in_channels)
