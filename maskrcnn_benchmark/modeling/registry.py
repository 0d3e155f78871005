"""Registries that map config strings to model parts (upstream names)."""
from maskrcnn_benchmark.utils.registry import Registry

BACKBONES = Registry("MODEL.BACKBONE.CONV_BODY")
RPN_HEADS = Registry("MODEL.RPN.RPN_HEAD")
ROI_BOX_FEATURE_EXTRACTORS = Registry("MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR")
ROI_BOX_PREDICTOR = Registry("MODEL.ROI_BOX_HEAD.PREDICTOR")
ROI_MASK_FEATURE_EXTRACTORS = Registry("MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR")
ROI_MASK_PREDICTOR = Registry("MODEL.ROI_MASK_HEAD.PREDICTOR")
