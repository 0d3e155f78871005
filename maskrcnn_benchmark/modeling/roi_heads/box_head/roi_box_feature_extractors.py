"""Box-head feature extractors, registered in ``registry.ROI_BOX_FEATURE_EXTRACTORS``.

Each takes ``(features, proposals)`` -- the backbone's feature maps (list of (N, C, H_l, W_l))
and one BoxList of xyxy image-pixel boxes per image -- and returns one feature row per box,
in the order of the boxes: (R, out_channels) for the MLP heads, (R, 2048, 7, 7) for the C4 head.
Pooler settings come from ``MODEL.ROI_BOX_HEAD.POOLER_{RESOLUTION, SCALES, SAMPLING_RATIO}``.
"""
import torch
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.backbone import resnet
from maskrcnn_benchmark.modeling.make_layers import group_norm, make_fc
from maskrcnn_benchmark.modeling.poolers import make_pooler


@registry.ROI_BOX_FEATURE_EXTRACTORS.register("ResNet50Conv5ROIFeatureExtractor")
class ResNet50Conv5ROIFeatureExtractor(nn.Module):
    """C4 head: ROIAlign on the stride-16 map (14x14), then ResNet's res5 stage ("layer4").

    Output: (R, 2048, 7, 7) with the default widths (``out_channels`` = 8 * RES2_OUT_CHANNELS).
    ``in_channels`` is unused: res5 takes the res4 width implied by MODEL.RESNETS.
    """

    def __init__(self, config, in_channels):
        super(ResNet50Conv5ROIFeatureExtractor, self).__init__()
        resnets = config.MODEL.RESNETS
        stage = resnet.StageSpec(index=4, block_count=3, return_features=False)
        self.pooler = make_pooler(config, "ROI_BOX_HEAD")
        self.head = resnet.ResNetHead(
            block_module=resnets.TRANS_FUNC,
            stages=(stage,),
            num_groups=resnets.NUM_GROUPS,
            width_per_group=resnets.WIDTH_PER_GROUP,
            stride_in_1x1=resnets.STRIDE_IN_1X1,
            stride_init=None,
            res2_out_channels=resnets.RES2_OUT_CHANNELS,
            dilation=resnets.RES5_DILATION,
        )
        self.out_channels = self.head.out_channels

    def forward(self, x, proposals):
        x = self.pooler(x, proposals)
        return self.head(x)


@registry.ROI_BOX_FEATURE_EXTRACTORS.register("FPN2MLPFeatureExtractor")
class FPN2MLPFeatureExtractor(nn.Module):
    """FPN head: multi-level ROIAlign (7x7), flatten, fc6 + ReLU, fc7 + ReLU.

    Output: (R, MLP_HEAD_DIM). fc6/fc7 use Caffe2's XavierFill (``make_fc``), with GroupNorm
    when ROI_BOX_HEAD.USE_GN.
    """

    def __init__(self, cfg, in_channels):
        super(FPN2MLPFeatureExtractor, self).__init__()
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        representation_size = cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM
        use_gn = cfg.MODEL.ROI_BOX_HEAD.USE_GN
        self.pooler = make_pooler(cfg, "ROI_BOX_HEAD")
        self.fc6 = make_fc(in_channels * resolution ** 2, representation_size, use_gn)
        self.fc7 = make_fc(representation_size, representation_size, use_gn)
        self.out_channels = representation_size

    def forward(self, x, proposals):
        x = self.pooler(x, proposals)
        x = x.flatten(start_dim=1)
        x = F.relu(self.fc6(x))
        return F.relu(self.fc7(x))


@registry.ROI_BOX_FEATURE_EXTRACTORS.register("FPN2MLPCosineFeatureExtractor")
class FPN2MLPCosineFeatureExtractor(FPN2MLPFeatureExtractor):
    """LST's FPN head (paper §3.2, "modified backbone"): as FPN2MLPFeatureExtractor, but fc7 has
    no ReLU, so the features fed to the cosine classifier can be negative.

    Output: (R, MLP_HEAD_DIM). Same modules and state-dict keys (fc6, fc7) and initialisation as
    FPN2MLPFeatureExtractor, so COCO-trained fc6/fc7 weights load unchanged.
    """

    def forward(self, x, proposals):
        x = self.pooler(x, proposals)
        x = x.flatten(start_dim=1)
        x = F.relu(self.fc6(x))
        return self.fc7(x)


@registry.ROI_BOX_FEATURE_EXTRACTORS.register("FPNXconv1fcFeatureExtractor")
class FPNXconv1fcFeatureExtractor(nn.Module):
    """FPN head: multi-level ROIAlign, NUM_STACKED_CONVS x (3x3 conv CONV_HEAD_DIM [+ GN] + ReLU),
    flatten, fc6 + ReLU.

    Output: (R, MLP_HEAD_DIM). Convs are initialised N(0, 0.01) with zero bias (no bias with GN).
    """

    def __init__(self, cfg, in_channels):
        super(FPNXconv1fcFeatureExtractor, self).__init__()
        head_cfg = cfg.MODEL.ROI_BOX_HEAD
        use_gn = head_cfg.USE_GN
        conv_head_dim = head_cfg.CONV_HEAD_DIM
        dilation = head_cfg.DILATION
        self.pooler = make_pooler(cfg, "ROI_BOX_HEAD")

        xconvs = []
        for _ in range(head_cfg.NUM_STACKED_CONVS):
            conv = nn.Conv2d(
                in_channels,
                conv_head_dim,
                kernel_size=3,
                stride=1,
                padding=dilation,
                dilation=dilation,
                bias=not use_gn,
            )
            torch.nn.init.normal_(conv.weight, std=0.01)
            if not use_gn:
                torch.nn.init.constant_(conv.bias, 0)
            xconvs.append(conv)
            if use_gn:
                xconvs.append(group_norm(conv_head_dim))
            xconvs.append(nn.ReLU(inplace=True))
            in_channels = conv_head_dim
        self.xconvs = nn.Sequential(*xconvs)

        input_size = conv_head_dim * head_cfg.POOLER_RESOLUTION ** 2
        self.fc6 = make_fc(input_size, head_cfg.MLP_HEAD_DIM, use_gn=False)
        self.out_channels = head_cfg.MLP_HEAD_DIM

    def forward(self, x, proposals):
        x = self.pooler(x, proposals)
        x = self.xconvs(x)
        x = x.flatten(start_dim=1)
        return F.relu(self.fc6(x))


def make_roi_box_feature_extractor(cfg, in_channels):
    """The extractor named by MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR."""
    return registry.ROI_BOX_FEATURE_EXTRACTORS[cfg.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR](
        cfg, in_channels
    )
