"""Backbones: ResNet/ResNeXt bodies with an optional FPN, chosen by MODEL.BACKBONE.CONV_BODY."""
from .backbone import build_backbone

__all__ = ["build_backbone"]
