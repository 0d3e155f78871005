"""Backbone builders, registered in ``registry.BACKBONES`` under ``MODEL.BACKBONE.CONV_BODY`` names.

A backbone is ``nn.Sequential(OrderedDict(body=ResNet[, fpn=FPN]))`` with an ``out_channels``
attribute, so upstream checkpoint keys (``backbone.body.*``, ``backbone.fpn.*``) load unchanged.
Upstream's RetinaNet bodies ("R-50-FPN-RETINANET", "R-101-FPN-RETINANET") are not built in this
fork; "R-18-FPN" and "R-34-FPN" are additions of this fork.
"""
from collections import OrderedDict

from torch import nn

from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.make_layers import conv_with_kaiming_uniform

from . import fpn as fpn_module
from . import resnet


@registry.BACKBONES.register("R-50-C4")
@registry.BACKBONES.register("R-50-C5")
@registry.BACKBONES.register("R-101-C4")
@registry.BACKBONES.register("R-101-C5")
def build_resnet_backbone(cfg):
    """ResNet body alone; the output is the last stage (C4: stride 16, C5: stride 32).

    ``out_channels`` is that stage's width (1024 for C4, 2048 for C5 with the default widths).
    Upstream sets it to MODEL.RESNETS.BACKBONE_OUT_CHANNELS, which is the same for C4 with
    upstream's configs but wrong for C5.
    """
    body = resnet.ResNet(cfg)
    model = nn.Sequential(OrderedDict([("body", body)]))
    model.out_channels = body.out_channels
    return model


@registry.BACKBONES.register("R-50-FPN")
@registry.BACKBONES.register("R-101-FPN")
@registry.BACKBONES.register("R-152-FPN")
@registry.BACKBONES.register("R-18-FPN")
@registry.BACKBONES.register("R-34-FPN")
def build_resnet_fpn_backbone(cfg):
    """ResNet body + FPN: P2..P5 (strides 4..32) and P6 (stride 64, LastLevelMaxPool).

    Every output has MODEL.RESNETS.BACKBONE_OUT_CHANNELS channels (256 in the FPN configs).
    """
    body = resnet.ResNet(cfg)
    in_channels_stage2 = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    out_channels = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    fpn = fpn_module.FPN(
        in_channels_list=[
            in_channels_stage2,
            in_channels_stage2 * 2,
            in_channels_stage2 * 4,
            in_channels_stage2 * 8,
        ],
        out_channels=out_channels,
        conv_block=conv_with_kaiming_uniform(cfg.MODEL.FPN.USE_GN, cfg.MODEL.FPN.USE_RELU),
        top_blocks=fpn_module.LastLevelMaxPool(),
    )
    model = nn.Sequential(OrderedDict([("body", body), ("fpn", fpn)]))
    model.out_channels = out_channels
    return model


def build_backbone(cfg):
    """The backbone named by MODEL.BACKBONE.CONV_BODY (an unknown name lists the known ones)."""
    return registry.BACKBONES[cfg.MODEL.BACKBONE.CONV_BODY](cfg)
