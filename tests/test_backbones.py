"""Backbones: upstream's build-and-run test, parity with torchvision's ResNets and FPN, freezing."""
import math
import os
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.config import cfg as global_cfg, merge_config_file
from maskrcnn_benchmark.layers.batch_norm import FrozenBatchNorm2d
from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.backbone import build_backbone
from maskrcnn_benchmark.modeling.backbone.fpn import FPN, LastLevelMaxPool
from maskrcnn_benchmark.modeling.backbone.resnet import (
    ResNet,
    ResNetHead,
    StageSpec,
)
from maskrcnn_benchmark.modeling.make_layers import conv_with_kaiming_uniform, get_group_gn, make_fc
from maskrcnn_benchmark.utils.torchvision_model_loading import torchvision_resnet_to_body_state_dict

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# Upstream's test reads these YAMLs for the FPN bodies and the defaults for the others.
BACKBONE_CFGS = {
    "R-50-FPN": "e2e_faster_rcnn_R_50_FPN_1x.yaml",
    "R-101-FPN": "e2e_faster_rcnn_R_101_FPN_1x.yaml",
    "R-152-FPN": "e2e_faster_rcnn_R_101_FPN_1x.yaml",
}
# ResNet-18/34 (additions of this fork) at torchvision's widths.
TORCHVISION_WIDTHS = ["MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 256]
BACKBONE_OPTS = {"R-18-FPN": TORCHVISION_WIDTHS, "R-34-FPN": TORCHVISION_WIDTHS}

# Small models for the tests of structure and errors.
NARROW = [
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 8,
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 8,
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 16,
]
NARROW_GN_R50 = [
    "MODEL.RESNETS.WIDTH_PER_GROUP", 32,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 32,
    "MODEL.RESNETS.STEM_FUNC", "StemWithGN",
    "MODEL.RESNETS.TRANS_FUNC", "BottleneckWithGN",
]

FPN_STRIDES = (4, 8, 16, 32, 64)


def make_cfg(conv_body, config_file=None, opts=()):
    cfg = global_cfg.clone()
    if config_file is not None:
        merge_config_file(cfg, os.path.join(CONFIG_ROOT, config_file))
    cfg.merge_from_list(["MODEL.BACKBONE.CONV_BODY", conv_body, *opts])
    return cfg


def expected_strides(conv_body):
    if conv_body.endswith("-C4"):
        return (16,)
    if conv_body.endswith("-C5"):
        return (32,)
    assert conv_body.endswith("-FPN"), conv_body
    return FPN_STRIDES


def relative_error(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def check_outputs(backbone, outputs, batch, height, width, strides):
    assert len(outputs) == len(strides)
    for output, stride in zip(outputs, strides):
        expected_size = (math.ceil(height / stride), math.ceil(width / stride))
        assert output.shape == (batch, backbone.out_channels) + expected_size


# ---------------------------------------------------------------------------------------------
# Upstream's test: every registered backbone builds and runs
# ---------------------------------------------------------------------------------------------
def test_expected_backbones_are_registered():
    upstream = {"R-50-C4", "R-50-C5", "R-101-C4", "R-101-C5", "R-50-FPN", "R-101-FPN", "R-152-FPN"}
    assert upstream | {"R-18-FPN", "R-34-FPN"} <= set(registry.BACKBONES)


@pytest.mark.parametrize("conv_body", sorted(registry.BACKBONES))
def test_build_backbones(conv_body):
    cfg = make_cfg(conv_body, BACKBONE_CFGS.get(conv_body), BACKBONE_OPTS.get(conv_body, ()))
    backbone = registry.BACKBONES[conv_body](cfg)
    assert getattr(backbone, "out_channels", None) is not None, f"{conv_body} has no out_channels"

    N, H, W = 2, 224, 256
    with torch.no_grad():
        outputs = backbone(torch.rand(N, 3, H, W))
    check_outputs(backbone, outputs, N, H, W, expected_strides(conv_body))


def test_unknown_conv_body_lists_registered_names():
    with pytest.raises(KeyError, match="R-50-FPN"):
        build_backbone(make_cfg("R-50-FPN-RETINANET"))


# ---------------------------------------------------------------------------------------------
# Parity with torchvision, given the same (random) weights
# ---------------------------------------------------------------------------------------------
def randomize_normalization(model, generator):
    """Non-trivial affine parameters and running statistics for every BatchNorm/GroupNorm."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                channels = module.weight.shape[0]
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(channels, generator=generator) * 0.1)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return model.eval()


def torchvision_features(model, x):
    """C2..C5 of a torchvision ResNet."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    features = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        features.append(x)
    return features


# torchvision model -> (conv body, upstream YAML or None, options). torchvision strides the 3x3
# conv (STRIDE_IN_1X1 False, which the X-101 YAML sets).
TORCHVISION_STRIDE = ["MODEL.RESNETS.STRIDE_IN_1X1", False]
PARITY_CASES = {
    "resnet18": ("R-18-FPN", None, TORCHVISION_WIDTHS + TORCHVISION_STRIDE),
    "resnet34": ("R-34-FPN", None, TORCHVISION_WIDTHS + TORCHVISION_STRIDE),
    "resnet50": ("R-50-FPN", None, TORCHVISION_STRIDE),
    "resnext101_32x8d": ("R-101-FPN", "e2e_mask_rcnn_X_101_32x8d_FPN_1x.yaml", []),
}


@pytest.mark.parametrize("torchvision_name", sorted(PARITY_CASES))
def test_body_matches_torchvision_resnet(torchvision_name):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    reference = getattr(torchvision.models, torchvision_name)(weights=None)
    reference = randomize_normalization(reference, generator)

    conv_body, config_file, opts = PARITY_CASES[torchvision_name]
    body = ResNet(make_cfg(conv_body, config_file, opts + ["MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 0]))
    assert isinstance(body.stem.bn1, FrozenBatchNorm2d) and body.stem.bn1.eps == 0
    body.load_state_dict(torchvision_resnet_to_body_state_dict(reference.state_dict()), strict=True)

    x = torch.randn(1, 3, 64, 64, generator=generator)
    with torch.no_grad():
        ours = body(x)
        expected = torchvision_features(reference, x)
    assert len(ours) == 4
    for feature, reference_feature in zip(ours, expected):
        assert feature.shape == reference_feature.shape
        assert relative_error(feature, reference_feature) <= 1e-4


def test_group_norm_body_matches_torchvision_resnet_with_group_norm():
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
    reference = randomize_normalization(reference, generator)

    # GN stem and bottlenecks, stride on the 3x3 conv
    body = ResNet(make_cfg("R-50-FPN", "gn_baselines/e2e_mask_rcnn_R_50_FPN_1x_gn.yaml"))
    assert isinstance(body.stem.bn1, nn.GroupNorm)
    assert isinstance(body.layer4[0].downsample[1], nn.GroupNorm)
    body.load_state_dict(torchvision_resnet_to_body_state_dict(reference.state_dict()), strict=True)

    x = torch.randn(1, 3, 64, 64, generator=generator)
    with torch.no_grad():
        for feature, reference_feature in zip(body(x), torchvision_features(reference, x)):
            assert relative_error(feature, reference_feature) <= 1e-4


RES5 = (StageSpec(index=4, block_count=3, return_features=False),)


def test_c4_head_matches_torchvision_layer4():
    generator = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    reference = randomize_normalization(torchvision.models.resnet50(weights=None), generator)
    head = ResNetHead("BottleneckWithFixedBatchNorm", RES5, stride_in_1x1=False)
    converted = torchvision_resnet_to_body_state_dict(reference.state_dict())
    head.load_state_dict({k: v for k, v in converted.items() if k.startswith("layer4.")}, strict=True)
    assert head.out_channels == 2048

    x = torch.randn(3, 1024, 14, 14, generator=generator)
    with torch.no_grad():
        assert relative_error(head(x), reference.layer4(x)) <= 1e-4


def test_dilated_c4_head_keeps_resolution():
    head = ResNetHead("BottleneckWithFixedBatchNorm", RES5, dilation=2)
    with torch.no_grad():
        assert head(torch.rand(2, 1024, 14, 14)).shape == (2, 2048, 14, 14)


def test_conversion_folds_batch_norm_eps_and_keeps_the_input():
    state_dict = torchvision.models.resnet18(weights=None).state_dict()
    converted = torchvision_resnet_to_body_state_dict(state_dict)
    assert "fc.weight" not in converted
    assert not any(key.endswith("num_batches_tracked") for key in converted)
    assert torch.equal(converted["stem.conv1.weight"], state_dict["conv1.weight"])
    key = "layer2.0.downsample.1.running_var"
    assert torch.allclose(converted[key], state_dict[key] + 1e-5)
    assert torch.equal(state_dict["bn1.running_var"], torch.ones(64))


def test_stride_in_1x1_places_the_stride():
    def first_block_of_res3(stride_in_1x1):
        body = ResNet(make_cfg("R-50-C4", opts=NARROW_GN_R50 + ["MODEL.RESNETS.STRIDE_IN_1X1", stride_in_1x1]))
        return body.layer2[0]

    msra, torch_style = first_block_of_res3(True), first_block_of_res3(False)
    assert (msra.conv1.stride, msra.conv2.stride) == ((2, 2), (1, 1))
    assert (torch_style.conv1.stride, torch_style.conv2.stride) == ((1, 1), (2, 2))


# ---------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("freeze_at", range(6))
def test_freeze_conv_body_at(freeze_at):
    # GroupNorm, so that every part has trainable norm parameters besides its convs.
    body = ResNet(make_cfg("R-50-FPN", opts=NARROW_GN_R50 + ["MODEL.BACKBONE.FREEZE_CONV_BODY_AT", freeze_at]))
    frozen_parts = ["stem", "layer1", "layer2", "layer3", "layer4"][:freeze_at]
    for name, parameter in body.named_parameters():
        assert parameter.requires_grad == (name.split(".")[0] not in frozen_parts), name


def test_frozen_batch_norm_has_no_parameters():
    body = ResNet(make_cfg("R-18-FPN", opts=NARROW))
    assert isinstance(body.layer1[0].bn1, FrozenBatchNorm2d)
    names = [name for name, _ in body.named_parameters()]
    assert names
    assert all(name.endswith(("conv1.weight", "conv2.weight", "downsample.0.weight")) for name in names)


def test_freezing_more_stages_than_the_body_has_is_an_error():
    with pytest.raises(ValueError, match="FREEZE_CONV_BODY_AT"):
        ResNet(make_cfg("R-50-C4", opts=NARROW_GN_R50 + ["MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 5]))


# ---------------------------------------------------------------------------------------------
# FPN
# ---------------------------------------------------------------------------------------------
def test_fpn_matches_torchvision_feature_pyramid_network():
    torch.manual_seed(3)
    in_channels_list, out_channels = [8, 16, 32, 64], 12
    fpn = FPN(in_channels_list, out_channels, conv_with_kaiming_uniform(), top_blocks=LastLevelMaxPool())
    reference = torchvision.ops.FeaturePyramidNetwork(
        in_channels_list, out_channels, extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelMaxPool()
    )
    with torch.no_grad():
        for i in range(len(in_channels_list)):
            for ours, theirs in (("fpn_inner", "inner_blocks"), ("fpn_layer", "layer_blocks")):
                conv = getattr(fpn, f"{ours}{i + 1}")
                conv.bias.normal_()
                reference.get_submodule(f"{theirs}.{i}.0").load_state_dict(conv.state_dict())

    features = [torch.randn(2, c, 32 // 2**i, 48 // 2**i) for i, c in enumerate(in_channels_list)]
    with torch.no_grad():
        ours = fpn(features)
        theirs = list(reference(OrderedDict((str(i), f) for i, f in enumerate(features))).values())
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fpn_backbone_p6_is_every_other_pixel_of_p5():
    backbone = build_backbone(make_cfg("R-18-FPN", opts=NARROW))
    assert [name for name, _ in backbone.named_children()] == ["body", "fpn"]
    with torch.no_grad():
        outputs = backbone(torch.rand(2, 3, 224, 256))
    check_outputs(backbone, outputs, 2, 224, 256, FPN_STRIDES)
    p5, p6 = outputs[3], outputs[4]
    assert torch.equal(p6, p5[:, :, ::2, ::2])
    assert torch.equal(p6, F.max_pool2d(p5, kernel_size=1, stride=2))


def test_fpn_rejects_sizes_not_divisible_by_32():
    backbone = build_backbone(make_cfg("R-18-FPN", opts=NARROW))
    with pytest.raises(ValueError, match="SIZE_DIVISIBILITY"), torch.no_grad():
        backbone(torch.rand(1, 3, 200, 200))


@pytest.mark.parametrize("use_gn,use_relu", [(False, False), (True, True)])
def test_fpn_conv_blocks(use_gn, use_relu):
    fpn = FPN([256, 512], 64, conv_with_kaiming_uniform(use_gn, use_relu))
    layer = fpn.fpn_layer1
    conv = layer[0] if use_gn or use_relu else layer
    # kaiming_uniform_(a=1): U(-b, b) with b = sqrt(6 / ((1 + a^2) * fan_in)) = sqrt(3 / fan_in)
    bound = math.sqrt(3 / (64 * 3 * 3))
    assert conv.weight.abs().max() <= bound
    assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    if use_gn:
        assert conv.bias is None and isinstance(layer[1], nn.GroupNorm) and layer[1].num_groups == 32
        assert isinstance(layer[2], nn.ReLU)
    else:
        assert torch.equal(conv.bias, torch.zeros(64))


def test_resnet_conv_init_is_kaiming_uniform_a1():
    body = ResNet(make_cfg("R-50-C4", opts=NARROW_GN_R50))
    conv = body.layer3[0].conv2
    fan_in = conv.in_channels // conv.groups * 9
    assert conv.weight.abs().max() <= math.sqrt(3 / fan_in)
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.05)


# ---------------------------------------------------------------------------------------------
# Configuration errors and helpers
# ---------------------------------------------------------------------------------------------
def test_deformable_convolutions_are_rejected():
    cfg = make_cfg("R-50-FPN", opts=NARROW_GN_R50 + ["MODEL.RESNETS.STAGE_WITH_DCN", (False, True, False, False)])
    with pytest.raises(NotImplementedError, match="STAGE_WITH_DCN"):
        ResNet(cfg)


def test_basic_blocks_reject_groups_and_bottleneck_bodies_reject_basic_blocks():
    with pytest.raises(ValueError, match="NUM_GROUPS"):
        ResNet(make_cfg("R-18-FPN", opts=NARROW + ["MODEL.RESNETS.NUM_GROUPS", 2]))
    with pytest.raises(ValueError, match="TRANS_FUNC"):
        ResNet(make_cfg("R-50-FPN", opts=["MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm"]))


def test_group_norm_group_count():
    assert get_group_gn(256, -1, 32) == 32
    assert get_group_gn(256, 16, -1) == 16
    with pytest.raises(ValueError, match="exactly one"):
        get_group_gn(256, 16, 32)
    with pytest.raises(ValueError, match="NUM_GROUPS"):
        get_group_gn(48, -1, 32)


def test_make_fc():
    fc = make_fc(10, 64)
    assert isinstance(fc, nn.Linear) and torch.equal(fc.bias, torch.zeros(64))
    fc_gn = make_fc(10, 64, use_gn=True)
    assert fc_gn[0].bias is None and isinstance(fc_gn[1], nn.GroupNorm)
    assert fc_gn(torch.randn(3, 10)).shape == (3, 64)
