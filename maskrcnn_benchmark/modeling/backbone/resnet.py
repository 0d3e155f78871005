"""ResNet / ResNeXt body and the C4 RoI head ("res5"), configured by ``MODEL.RESNETS``.

Module names follow upstream maskrcnn-benchmark, so its checkpoints load as they are:
``stem.{conv1, bn1}`` and ``layer{1..4}.{k}.{conv1..3, bn1..3, downsample.0/1}``.

* Stage widths: stage ``i`` (1 = res2 ... 4 = res5) outputs ``RES2_OUT_CHANNELS * 2**(i-1)``
  channels; a bottleneck is ``NUM_GROUPS * WIDTH_PER_GROUP * 2**(i-1)`` channels wide, with its
  stride on the 1x1 conv (MSRA, ``STRIDE_IN_1X1`` True) or on the 3x3 conv (torchvision, Caffe2
  ResNeXt). ResNeXt-101 32x8d is "R-101-FPN" with NUM_GROUPS 32, WIDTH_PER_GROUP 8,
  STRIDE_IN_1X1 False.
* Normalisation: FrozenBatchNorm2d (upstream's eps 0) for "...WithFixedBatchNorm", GroupNorm
  (``make_layers.group_norm``) for "...WithGN".
* Additions of this fork: ResNet-18/34 bodies ("R-18-FPN", "R-34-FPN") built from torchvision-style
  basic blocks (two 3x3 convs). Their stages output ``RES2_OUT_CHANNELS * 2**(i-1)`` channels, so
  RES2_OUT_CHANNELS 64 gives torchvision's ResNet-18/34 and smaller values give narrow models.
  TRANS_FUNC "BottleneckWith..." is replaced by the matching "BasicBlockWith..." for them.
  ``utils.torchvision_model_loading`` converts torchvision ResNet weights to the body's keys.
* ``RES5_DILATION`` is read by the C4 box head for its :class:`ResNetHead`, as upstream; the
  body's res5 is never dilated.
* Deformable convolutions (``STAGE_WITH_DCN``) are not supported.
"""
from collections import namedtuple

from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.layers.batch_norm import FrozenBatchNorm2d
from maskrcnn_benchmark.layers.misc import Conv2d
from maskrcnn_benchmark.modeling.make_layers import group_norm
from maskrcnn_benchmark.utils.registry import Registry

StageSpec = namedtuple(
    "StageSpec",
    [
        "index",  # stage index: 1 (res2) ... 4 (res5); the stage is the module "layer{index}"
        "block_count",  # number of residual blocks in the stage
        "return_features",  # True: the body returns this stage's output
    ],
)


def _stage_specs(block_counts, return_all):
    """StageSpecs for consecutive stages from res2; the last one is always returned."""
    last = len(block_counts)
    return tuple(
        StageSpec(index=i, block_count=count, return_features=return_all or i == last)
        for i, count in enumerate(block_counts, 1)
    )


ResNet50StagesTo5 = _stage_specs((3, 4, 6, 3), return_all=False)
ResNet50StagesTo4 = _stage_specs((3, 4, 6), return_all=False)
ResNet101StagesTo5 = _stage_specs((3, 4, 23, 3), return_all=False)
ResNet101StagesTo4 = _stage_specs((3, 4, 23), return_all=False)
ResNet50FPNStagesTo5 = _stage_specs((3, 4, 6, 3), return_all=True)
ResNet101FPNStagesTo5 = _stage_specs((3, 4, 23, 3), return_all=True)
ResNet152FPNStagesTo5 = _stage_specs((3, 8, 36, 3), return_all=True)
# Additions of this fork (basic blocks)
ResNet18FPNStagesTo5 = _stage_specs((2, 2, 2, 2), return_all=True)
ResNet34FPNStagesTo5 = _stage_specs((3, 4, 6, 3), return_all=True)

_STAGE_SPECS = Registry(
    "MODEL.BACKBONE.CONV_BODY (ResNet stage specs)",
    {
        "R-50-C4": ResNet50StagesTo4,
        "R-50-C5": ResNet50StagesTo5,
        "R-101-C4": ResNet101StagesTo4,
        "R-101-C5": ResNet101StagesTo5,
        "R-50-FPN": ResNet50FPNStagesTo5,
        "R-101-FPN": ResNet101FPNStagesTo5,
        "R-152-FPN": ResNet152FPNStagesTo5,
        "R-18-FPN": ResNet18FPNStagesTo5,
        "R-34-FPN": ResNet34FPNStagesTo5,
    },
)

# Conv bodies built from basic blocks, and the basic block that stands in for each bottleneck.
_BASIC_BLOCK_CONV_BODIES = ("R-18-FPN", "R-34-FPN")
_BASIC_BLOCK_FOR_BOTTLENECK = {
    "BottleneckWithFixedBatchNorm": "BasicBlockWithFixedBatchNorm",
    "BottleneckWithGN": "BasicBlockWithGN",
}


class ResNet(nn.Module):
    """ResNet body: stem, then the stages listed by the StageSpecs of ``MODEL.BACKBONE.CONV_BODY``.

    ``forward(x)``: x (N, 3, H, W) -> list of the returned stages' outputs, stage ``i`` being
    (N, RES2_OUT_CHANNELS * 2**(i-1), H / 2**(i+1), W / 2**(i+1)) (sizes rounded up).
    ``out_channels`` is the channel count of the last stage.
    """

    def __init__(self, cfg):
        super().__init__()
        resnets = cfg.MODEL.RESNETS
        stem_module = _STEM_MODULES[resnets.STEM_FUNC]
        stage_specs = _STAGE_SPECS[cfg.MODEL.BACKBONE.CONV_BODY]
        transformation_module = _TRANSFORMATION_MODULES[transformation_func_name(cfg)]

        self.stem = stem_module(cfg)

        in_channels = resnets.STEM_OUT_CHANNELS
        stage2_bottleneck_channels = resnets.NUM_GROUPS * resnets.WIDTH_PER_GROUP
        self.stages = []
        self.return_features = {}
        for stage_spec in stage_specs:
            name = "layer" + str(stage_spec.index)
            stage2_relative_factor = 2 ** (stage_spec.index - 1)
            out_channels = resnets.RES2_OUT_CHANNELS * stage2_relative_factor
            module = _make_stage(
                transformation_module,
                in_channels,
                stage2_bottleneck_channels * stage2_relative_factor,
                out_channels,
                stage_spec.block_count,
                resnets.NUM_GROUPS,
                resnets.STRIDE_IN_1X1,
                first_stride=int(stage_spec.index > 1) + 1,
                dcn_config=_dcn_config(cfg, stage_spec.index),
            )
            in_channels = out_channels
            self.add_module(name, module)
            self.stages.append(name)
            self.return_features[name] = stage_spec.return_features
        self.out_channels = in_channels

        self._freeze_backbone(cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT)

    def _freeze_backbone(self, freeze_at):
        """Set requires_grad False on the stem (freeze_at >= 1) and layer1..layer{freeze_at - 1}."""
        if freeze_at <= 0:
            return
        if freeze_at > 1 + len(self.stages):
            raise ValueError(
                f"MODEL.BACKBONE.FREEZE_CONV_BODY_AT={freeze_at}, but this body has only the stem and "
                f"{len(self.stages)} stages; use a value from 0 to {1 + len(self.stages)}"
            )
        for stage_index in range(freeze_at):
            module = self.stem if stage_index == 0 else getattr(self, "layer" + str(stage_index))
            for parameter in module.parameters():
                parameter.requires_grad = False

    def forward(self, x):
        outputs = []
        x = self.stem(x)
        for stage_name in self.stages:
            x = getattr(self, stage_name)(x)
            if self.return_features[stage_name]:
                outputs.append(x)
        return outputs


class ResNetHead(nn.Module):
    """Stages run on pooled RoI features: the C4 box head's res5 (``layer4``).

    Built directly from arguments (upstream's constructor): ``block_module`` is a TRANS_FUNC name,
    ``stages`` a sequence of StageSpecs. The first stage takes ``out_channels // 2`` channels, and
    its first block has stride ``stride_init`` (None: 2 unless the stage is res2). With
    ``dilation`` > 1 the blocks use dilated 3x3 convs and stride 1 instead.
    ``forward(x)``: (R, out_channels // 2, h, w) -> (R, out_channels, h / stride, w / stride).
    """

    def __init__(
        self,
        block_module,
        stages,
        num_groups=1,
        width_per_group=64,
        stride_in_1x1=True,
        stride_init=None,
        res2_out_channels=256,
        dilation=1,
        dcn_config=None,
    ):
        super().__init__()
        stage2_relative_factor = 2 ** (stages[0].index - 1)
        stage2_bottleneck_channels = num_groups * width_per_group
        out_channels = res2_out_channels * stage2_relative_factor
        in_channels = out_channels // 2
        bottleneck_channels = stage2_bottleneck_channels * stage2_relative_factor

        block_module = _TRANSFORMATION_MODULES[block_module]

        self.stages = []
        stride = stride_init
        for stage in stages:
            name = "layer" + str(stage.index)
            if not stride:
                stride = int(stage.index > 1) + 1
            module = _make_stage(
                block_module,
                in_channels,
                bottleneck_channels,
                out_channels,
                stage.block_count,
                num_groups,
                stride_in_1x1,
                first_stride=stride,
                dilation=dilation,
                dcn_config=dcn_config,
            )
            stride = None
            self.add_module(name, module)
            self.stages.append(name)
        self.out_channels = out_channels

    def forward(self, x):
        for stage in self.stages:
            x = getattr(self, stage)(x)
        return x


def _make_stage(
    transformation_module,
    in_channels,
    bottleneck_channels,
    out_channels,
    block_count,
    num_groups,
    stride_in_1x1,
    first_stride,
    dilation=1,
    dcn_config=None,
):
    """``block_count`` blocks in an nn.Sequential; only the first one strides or changes width."""
    blocks = []
    stride = first_stride
    for _ in range(block_count):
        blocks.append(
            transformation_module(
                in_channels,
                bottleneck_channels,
                out_channels,
                num_groups,
                stride_in_1x1,
                stride,
                dilation=dilation,
                dcn_config=dcn_config,
            )
        )
        stride = 1
        in_channels = out_channels
    return nn.Sequential(*blocks)


def _dcn_config(cfg, stage_index):
    """Upstream's per-stage deformable-conv settings (read only to reject them)."""
    return {
        "stage_with_dcn": cfg.MODEL.RESNETS.STAGE_WITH_DCN[stage_index - 1],
        "with_modulated_dcn": cfg.MODEL.RESNETS.WITH_MODULATED_DCN,
        "deformable_groups": cfg.MODEL.RESNETS.DEFORMABLE_GROUPS,
    }


def _reject_dcn(dcn_config):
    if dcn_config and dcn_config.get("stage_with_dcn", False):
        raise NotImplementedError(
            "deformable convolutions are not supported in this fork; set "
            "MODEL.RESNETS.STAGE_WITH_DCN to all False"
        )


def _conv(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1):
    """Bias-free conv with upstream's ResNet init, ``kaiming_uniform_(a=1)``."""
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=False,
    )
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return conv


def _downsample(in_channels, out_channels, stride, norm_func):
    """Projection shortcut ``downsample.{0: 1x1 conv, 1: norm}``, or None for the identity."""
    if in_channels == out_channels and stride == 1:
        return None
    return nn.Sequential(_conv(in_channels, out_channels, 1, stride=stride), norm_func(out_channels))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped, possibly dilated) -> 1x1 residual block.

    (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride); with ``dilation`` > 1
    the stride is dropped (upstream). ``stride_in_1x1`` puts the stride on the first 1x1 conv
    (MSRA) instead of the 3x3 conv.
    """

    def __init__(
        self,
        in_channels,
        bottleneck_channels,
        out_channels,
        num_groups,
        stride_in_1x1,
        stride,
        dilation,
        norm_func,
        dcn_config,
    ):
        super().__init__()
        _reject_dcn(dcn_config)
        if dilation > 1:
            stride = 1
        self.downsample = _downsample(in_channels, out_channels, stride, norm_func)

        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, stride=stride_1x1)
        self.bn1 = norm_func(bottleneck_channels)
        self.conv2 = _conv(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
        )
        self.bn2 = norm_func(bottleneck_channels)
        self.conv3 = _conv(bottleneck_channels, out_channels, 1)
        self.bn3 = norm_func(out_channels)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = F.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return F.relu_(out)


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block of ResNet-18/34, as torchvision's (an addition of this fork).

    (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride); with ``dilation`` > 1
    the stride is dropped and both convs are dilated. Takes the Bottleneck's arguments so that
    the stage builders can use either; ``bottleneck_channels`` and ``stride_in_1x1`` do not apply.
    """

    def __init__(
        self,
        in_channels,
        bottleneck_channels,
        out_channels,
        num_groups,
        stride_in_1x1,
        stride,
        dilation,
        norm_func,
        dcn_config,
    ):
        super().__init__()
        _reject_dcn(dcn_config)
        if num_groups != 1:
            raise ValueError(
                f"ResNet-18/34 basic blocks are not grouped; set MODEL.RESNETS.NUM_GROUPS to 1 "
                f"(got {num_groups})"
            )
        if dilation > 1:
            stride = 1
        self.downsample = _downsample(in_channels, out_channels, stride, norm_func)

        self.conv1 = _conv(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation)
        self.bn1 = norm_func(out_channels)
        self.conv2 = _conv(out_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn2 = norm_func(out_channels)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu_(out)


class BaseStem(nn.Module):
    """7x7/2 conv (3 -> STEM_OUT_CHANNELS), norm, ReLU, 3x3/2 max-pool: (N, 3, H, W) -> stride 4."""

    def __init__(self, cfg, norm_func):
        super().__init__()
        out_channels = cfg.MODEL.RESNETS.STEM_OUT_CHANNELS
        self.conv1 = _conv(3, out_channels, 7, stride=2, padding=3)
        self.bn1 = norm_func(out_channels)

    def forward(self, x):
        x = F.relu_(self.bn1(self.conv1(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckWithFixedBatchNorm(Bottleneck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, norm_func=FrozenBatchNorm2d, **kwargs)


class BottleneckWithGN(Bottleneck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, norm_func=group_norm, **kwargs)


class BasicBlockWithFixedBatchNorm(BasicBlock):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, norm_func=FrozenBatchNorm2d, **kwargs)


class BasicBlockWithGN(BasicBlock):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, norm_func=group_norm, **kwargs)


class StemWithFixedBatchNorm(BaseStem):
    def __init__(self, cfg):
        super().__init__(cfg, norm_func=FrozenBatchNorm2d)


class StemWithGN(BaseStem):
    def __init__(self, cfg):
        super().__init__(cfg, norm_func=group_norm)


_TRANSFORMATION_MODULES = Registry(
    "MODEL.RESNETS.TRANS_FUNC",
    {
        "BottleneckWithFixedBatchNorm": BottleneckWithFixedBatchNorm,
        "BottleneckWithGN": BottleneckWithGN,
        "BasicBlockWithFixedBatchNorm": BasicBlockWithFixedBatchNorm,
        "BasicBlockWithGN": BasicBlockWithGN,
    },
)

_STEM_MODULES = Registry(
    "MODEL.RESNETS.STEM_FUNC",
    {
        "StemWithFixedBatchNorm": StemWithFixedBatchNorm,
        "StemWithGN": StemWithGN,
    },
)


def transformation_func_name(cfg):
    """The block type the body of ``cfg`` is built from.

    MODEL.RESNETS.TRANS_FUNC, except that ResNet-18/34 bodies (basic blocks) turn
    "BottleneckWith<Norm>" into "BasicBlockWith<Norm>"; basic blocks in a deeper body are an error.
    """
    name = cfg.MODEL.RESNETS.TRANS_FUNC
    conv_body = cfg.MODEL.BACKBONE.CONV_BODY
    if conv_body in _BASIC_BLOCK_CONV_BODIES:
        return _BASIC_BLOCK_FOR_BOTTLENECK.get(name, name)
    if issubclass(_TRANSFORMATION_MODULES[name], BasicBlock):
        raise ValueError(
            f"MODEL.RESNETS.TRANS_FUNC={name!r} is a ResNet-18/34 block, but "
            f"MODEL.BACKBONE.CONV_BODY={conv_body!r} uses bottlenecks; use a "
            f"'BottleneckWith...' TRANS_FUNC or one of {list(_BASIC_BLOCK_CONV_BODIES)}"
        )
    return name
