"""Load torchvision ImageNet ResNet/ResNeXt classifier weights into the backbone body (modeling.backbone.resnet)."""
from collections import OrderedDict


def is_torchvision_resnet_state_dict(state_dict):
    """True for the state dict of a torchvision ``resnet*``/``resnext*`` classifier (top-level
    ``conv1``, ``layer1`` and ``fc`` keys), e.g. an ImageNet weights file from torchvision."""
    return all(key in state_dict for key in ("conv1.weight", "layer1.0.conv1.weight", "fc.weight"))


def torchvision_resnet_to_body_state_dict(state_dict, bn_eps=1e-5):
    """Rename a torchvision ResNet/ResNeXt state dict to the keys of modeling.backbone.resnet.ResNet (the body).

    ``conv1.*``/``bn1.*`` become ``stem.conv1.*``/``stem.bn1.*``; ``layer{1..4}.*`` (including
    ``downsample.0/1``) keep their names; ``fc.*`` and ``num_batches_tracked`` are dropped.
    torchvision's BatchNorm2d computes with ``eps`` (1e-5 by default) while the body's
    FrozenBatchNorm2d has upstream's eps 0, so ``bn_eps`` is added to every ``running_var``:
    the body then computes what torchvision's model computes in eval mode. Pass ``bn_eps=0``
    to keep the statistics unchanged. Returns a new OrderedDict; the input is not modified.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        if key.startswith(("conv1.", "bn1.")):
            key = "stem." + key
        if key.endswith("running_var"):
            value = value + bn_eps
        converted[key] = value
    return converted
