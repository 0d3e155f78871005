"""RoI box and mask feature extractors: upstream's shape test for every registered extractor,
and the FPN heads against torchvision's roi_align (aligned=False) followed by plain torch ops."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.roi_heads.box_head.roi_box_feature_extractors import (
    FPN2MLPFeatureExtractor,
    FPNXconv1fcFeatureExtractor,
    ResNet50Conv5ROIFeatureExtractor,
)
from maskrcnn_benchmark.modeling.roi_heads.mask_head.roi_mask_feature_extractors import (
    MaskRCNNFPNFeatureExtractor,
)
from maskrcnn_benchmark.structures.bounding_box import BoxList

# Upstream's test: in_channels 64, except the res5 head, which takes the res4 width.
IN_CHANNELS = {"ResNet50Conv5ROIFeatureExtractor": 1024}
DEFAULT_IN_CHANNELS = 64
BOXES = [[1, 1, 10, 10], [5, 5, 8, 8], [2, 2, 3, 4]]
IMAGE_SIZE = (384, 512)


def _run_extractor(builder, name, cfg):
    in_channels = IN_CHANNELS.get(name, DEFAULT_IN_CHANNELS)
    extractor = builder(cfg, in_channels)
    num_images = 2
    features = torch.rand(num_images, in_channels, 24, 32)
    boxes = BoxList(BOXES, IMAGE_SIZE, "xyxy")
    return extractor, extractor([features], [boxes] * num_images), num_images


@pytest.mark.parametrize(
    "extractors, expected_names",
    [
        (
            registry.ROI_BOX_FEATURE_EXTRACTORS,
            {
                "ResNet50Conv5ROIFeatureExtractor",
                "FPN2MLPFeatureExtractor",
                "FPNXconv1fcFeatureExtractor",
            },
        ),
        (
            registry.ROI_MASK_FEATURE_EXTRACTORS,
            {"ResNet50Conv5ROIFeatureExtractor", "MaskRCNNFPNFeatureExtractor"},
        ),
    ],
    ids=["box", "mask"],
)
def test_registered_extractors_return_one_row_per_box(extractors, expected_names):
    assert expected_names <= set(extractors)
    for name, builder in extractors.items():
        extractor, out, num_images = _run_extractor(builder, name, default_cfg.clone())
        assert out.shape[:2] == (num_images * len(BOXES), extractor.out_channels), name


def test_mask_registry_shares_the_res5_box_extractor():
    assert (
        registry.ROI_MASK_FEATURE_EXTRACTORS["ResNet50Conv5ROIFeatureExtractor"]
        is ResNet50Conv5ROIFeatureExtractor
    )


def test_res5_extractor_output_shape_and_module_names():
    cfg = default_cfg.clone()
    extractor, out, _ = _run_extractor(
        ResNet50Conv5ROIFeatureExtractor, "ResNet50Conv5ROIFeatureExtractor", cfg
    )
    # 14x14 pooled, res5 strides by 2: (R, 2048, 7, 7).
    assert extractor.out_channels == 2048
    assert out.shape == (2 * len(BOXES), 2048, 7, 7)
    names = set(dict(extractor.named_parameters()))
    assert "head.layer4.0.conv1.weight" in names and "head.layer4.2.conv3.weight" in names
    assert "head.layer4.0.downsample.0.weight" in names


def _single_level_rois(boxes, num_images):
    rows = [[i] + box for i in range(num_images) for box in boxes]
    return torch.tensor(rows, dtype=torch.float32)


def test_fpn2mlp_matches_torchvision_roi_align_and_linear_layers():
    torch.manual_seed(0)
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        [
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
            "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2,
            "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", 32,
        ]
    )
    extractor = FPN2MLPFeatureExtractor(cfg, 8)
    features = torch.randn(2, 8, 24, 32)
    boxes = [[1.0, 1.0, 100.0, 120.0], [50.0, 60.0, 80.0, 99.0]]
    out = extractor([features], [BoxList(boxes, IMAGE_SIZE)] * 2)

    pooled = roi_align(
        features, _single_level_rois(boxes, 2), (7, 7), spatial_scale=1.0 / 16, sampling_ratio=2,
        aligned=False,
    )
    hidden = F.relu(F.linear(pooled.flatten(1), extractor.fc6.weight, extractor.fc6.bias))
    expected = F.relu(F.linear(hidden, extractor.fc7.weight, extractor.fc7.bias))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert extractor.fc6.in_features == 8 * 7 * 7 and extractor.out_channels == 32
    # Caffe2 XavierFill = kaiming_uniform(a=1): U(-b, b) with b = sqrt(3 / fan_in).
    bound = (3.0 / extractor.fc6.in_features) ** 0.5
    assert extractor.fc6.weight.abs().max() <= bound
    assert extractor.fc6.weight.abs().max() > 0.9 * bound
    assert torch.all(extractor.fc6.bias == 0)


def test_fpn_xconv1fc_matches_plain_convolutions():
    torch.manual_seed(0)
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        [
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
            "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2,
            "MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM", 16,
            "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS", 2,
            "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", 32,
        ]
    )
    extractor = FPNXconv1fcFeatureExtractor(cfg, 8)
    features = torch.randn(1, 8, 24, 32)
    boxes = [[3.0, 4.0, 150.0, 200.0]]
    out = extractor([features], [BoxList(boxes, IMAGE_SIZE)])

    x = roi_align(features, _single_level_rois(boxes, 1), (7, 7), 1.0 / 16, 2, aligned=False)
    convs = [m for m in extractor.xconvs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2
    for conv in convs:
        x = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
        assert torch.all(conv.bias == 0)
    expected = F.relu(F.linear(x.flatten(1), extractor.fc6.weight, extractor.fc6.bias))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_fpn_xconv1fc_with_group_norm_has_no_conv_bias():
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        ["MODEL.ROI_BOX_HEAD.USE_GN", True, "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS", 1]
    )
    extractor = FPNXconv1fcFeatureExtractor(cfg, 64)
    conv, norm, relu = list(extractor.xconvs)
    assert conv.bias is None
    assert isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 32
    assert isinstance(relu, torch.nn.ReLU)


def test_mask_fpn_extractor_matches_plain_convolutions():
    torch.manual_seed(0)
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        [
            "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", 2,
            "MODEL.ROI_MASK_HEAD.CONV_LAYERS", (16, 16, 16, 12),
        ]
    )
    extractor = MaskRCNNFPNFeatureExtractor(cfg, 8)
    assert extractor.blocks == ["mask_fcn1", "mask_fcn2", "mask_fcn3", "mask_fcn4"]
    assert extractor.out_channels == 12
    features = torch.randn(1, 8, 24, 32)
    boxes = [[10.0, 20.0, 90.0, 160.0], [0.0, 0.0, 30.0, 30.0]]
    out = extractor([features], [BoxList(boxes, IMAGE_SIZE)])

    x = roi_align(features, _single_level_rois(boxes, 1), (14, 14), 1.0 / 16, 2, aligned=False)
    for name in extractor.blocks:
        conv = getattr(extractor, name)
        x = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-5)
    assert out.shape == (2, 12, 14, 14)


def test_mask_fpn_extractor_init_is_kaiming_normal_fan_out():
    torch.manual_seed(0)
    extractor = MaskRCNNFPNFeatureExtractor(default_cfg.clone(), 256)
    conv = extractor.mask_fcn2
    expected_std = (2.0 / (conv.out_channels * 3 * 3)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.02)
    assert torch.all(conv.bias == 0)


def test_mask_fpn_extractor_dilation_and_group_norm():
    cfg = default_cfg.clone()
    cfg.merge_from_list(["MODEL.ROI_MASK_HEAD.DILATION", 2, "MODEL.ROI_MASK_HEAD.USE_GN", True])
    extractor = MaskRCNNFPNFeatureExtractor(cfg, 64)
    conv, norm = extractor.mask_fcn1[0], extractor.mask_fcn1[1]
    assert conv.dilation == (2, 2) and conv.padding == (2, 2) and conv.bias is None
    assert isinstance(norm, torch.nn.GroupNorm)
    boxes = BoxList(BOXES, IMAGE_SIZE)
    assert extractor([torch.rand(1, 64, 24, 32)], [boxes]).shape == (3, 256, 14, 14)
