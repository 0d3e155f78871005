"""Mask-head feature extractors, registered in ``registry.ROI_MASK_FEATURE_EXTRACTORS``.

Each takes ``(features, proposals)`` and returns (R, out_channels, h, w) features, one per box.
"""
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.make_layers import make_conv3x3
from maskrcnn_benchmark.modeling.poolers import make_pooler

from ..box_head.roi_box_feature_extractors import ResNet50Conv5ROIFeatureExtractor

# The C4 mask head runs the box head's res5 extractor (pooling with MODEL.ROI_BOX_HEAD's settings).
registry.ROI_MASK_FEATURE_EXTRACTORS.register(
    "ResNet50Conv5ROIFeatureExtractor", ResNet50Conv5ROIFeatureExtractor
)


@registry.ROI_MASK_FEATURE_EXTRACTORS.register("MaskRCNNFPNFeatureExtractor")
class MaskRCNNFPNFeatureExtractor(nn.Module):
    """FPN mask head: multi-level ROIAlign (14x14), then one 3x3 conv + ReLU per entry of
    MODEL.ROI_MASK_HEAD.CONV_LAYERS (modules "mask_fcn1", "mask_fcn2", ...).

    Convs: Kaiming normal (fan_out), zero bias, dilation DILATION, GroupNorm when USE_GN.
    Output: (R, CONV_LAYERS[-1], 14, 14).
    """

    def __init__(self, cfg, in_channels):
        super(MaskRCNNFPNFeatureExtractor, self).__init__()
        head_cfg = cfg.MODEL.ROI_MASK_HEAD
        self.pooler = make_pooler(cfg, "ROI_MASK_HEAD")

        next_feature = in_channels
        self.blocks = []
        for layer_idx, layer_features in enumerate(head_cfg.CONV_LAYERS, 1):
            layer_name = "mask_fcn{}".format(layer_idx)
            module = make_conv3x3(
                next_feature,
                layer_features,
                dilation=head_cfg.DILATION,
                stride=1,
                use_gn=head_cfg.USE_GN,
            )
            self.add_module(layer_name, module)
            self.blocks.append(layer_name)
            next_feature = layer_features
        self.out_channels = next_feature

    def forward(self, x, proposals):
        x = self.pooler(x, proposals)
        for layer_name in self.blocks:
            x = F.relu(getattr(self, layer_name)(x))
        return x


def make_roi_mask_feature_extractor(cfg, in_channels):
    """The extractor named by MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR."""
    return registry.ROI_MASK_FEATURE_EXTRACTORS[cfg.MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR](
        cfg, in_channels
    )
