"""Read Caffe2/Detectron ``.pkl`` weights and rename their blobs to this package's parameter names.

Detectron stores a pickle (written by Python 2, hence ``encoding="latin1"``) of numpy arrays,
either as a flat dict or under a ``"blobs"`` entry. Blob names such as ``res2_0_branch2a_bn_s``
become torchvision-style names (``layer1.0.bn1.weight``); :func:`load_state_dict` then finds them
in the detector by suffix matching. The renaming is a fixed, ordered list of substring
replacements taken from upstream; the order matters (e.g. ".b" -> ".bias" also hits ".branch"
and ".bbox", which later rules repair).
"""
import io
import logging
import pickle
import re
from collections import OrderedDict

import torch

from maskrcnn_benchmark.utils.registry import Registry

logger = logging.getLogger(__name__)

# Applied in order to every blob name (after the X-101 "pred_*" rename below).
_BASIC_RESNET_RENAMES = (
    ("_", "."),
    (".w", ".weight"),
    (".bn", "_bn"),
    (".b", ".bias"),
    ("_bn.s", "_bn.scale"),
    (".biasranch", ".branch"),  # repair ".branch" hit by ".b" -> ".bias"
    ("bbox.pred", "bbox_pred"),
    ("cls.score", "cls_score"),
    ("res.conv1_", "conv1_"),
    # RPN / Faster R-CNN
    (".biasbox", ".bbox"),  # repair ".bbox" hit by ".b" -> ".bias"
    ("conv.rpn", "rpn.conv"),
    ("rpn.bbox.pred", "rpn.bbox_pred"),
    ("rpn.cls.logits", "rpn.cls_logits"),
    # AffineChannel scale -> (Frozen)BatchNorm weight
    ("_bn.scale", "_bn.weight"),
    # torchvision ResNet names
    ("conv1_bn.", "bn1."),
    ("res2.", "layer1."),
    ("res3.", "layer2."),
    ("res4.", "layer3."),
    ("res5.", "layer4."),
    (".branch2a.", ".conv1."),
    (".branch2a_bn.", ".bn1."),
    (".branch2b.", ".conv2."),
    (".branch2b_bn.", ".bn2."),
    (".branch2c.", ".conv3."),
    (".branch2c_bn.", ".bn3."),
    (".branch1.", ".downsample.0."),
    (".branch1_bn.", ".downsample.1."),
    # GroupNorm
    ("conv1.gn.s", "bn1.weight"),
    ("conv1.gn.bias", "bn1.bias"),
    ("conv2.gn.s", "bn2.weight"),
    ("conv2.gn.bias", "bn2.bias"),
    ("conv3.gn.s", "bn3.weight"),
    ("conv3.gn.bias", "bn3.bias"),
    ("downsample.0.gn.s", "downsample.1.weight"),
    ("downsample.0.gn.bias", "downsample.1.bias"),
)

# Applied after the FPN renames.
_HEAD_RENAMES = (
    # Mask R-CNN
    ("mask.fcn.logits", "mask_fcn_logits"),
    (".[mask].fcn", "mask_fcn"),
    ("conv5.mask", "conv5_mask"),
    # Keypoint R-CNN
    ("kps.score.lowres", "kps_score_lowres"),
    ("kps.score", "kps_score"),
    ("conv.fcn", "conv_fcn"),
    # this package's RPN nests its layers under "head"
    ("rpn.", "rpn.head."),
)

# Detectron's FPN blobs name each level after the last block of its stage ("res4_5_sum" in R-50),
# so the mapping to fpn_inner{i} / fpn_layer{i} depends on the depth. Entries: "<stage>.<last block>"
# for res2..res5, after the res -> layer rename.
_C2_STAGE_NAMES = {
    "R-50": ("1.2", "2.3", "3.5", "4.2"),
    "R-101": ("1.2", "2.3", "3.22", "4.2"),
    "R-152": ("1.2", "2.7", "3.35", "4.2"),
}

# The only globals a Detectron weights pickle needs: numpy arrays, dtypes and scalars (under
# NumPy 1's and NumPy 2's module names), and the byte-string codec of Python 3 protocol-2 pickles.
_ALLOWED_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
})


def _apply_renames(key, renames):
    for old, new in renames:
        key = key.replace(old, new)
    return key


def _fpn_renames(stage_names):
    """(old, new) pairs for the FPN blobs and the level-2 RPN blobs shared by all FPN levels."""
    renames = []
    for level, stage_name in enumerate(stage_names, 1):
        lateral = ".lateral" if level < 4 else ""
        renames.append((f"fpn.inner.layer{stage_name}.sum{lateral}", f"fpn_inner{level}"))
        renames.append((f"fpn.layer{stage_name}.sum", f"fpn_layer{level}"))
    renames += [
        ("rpn.conv.fpn2", "rpn.conv"),
        ("rpn.bbox_pred.fpn2", "rpn.bbox_pred"),
        ("rpn.cls_logits.fpn2", "rpn.cls_logits"),
    ]
    return renames


def rename_c2_key(key, stage_names):
    """Map one Caffe2 blob name to this package's parameter name (e.g. "res_conv1_bn_s" -> "bn1.weight")."""
    if key in ("pred_w", "pred_b"):  # X-101's ImageNet classifier; named fc1000 in the other models
        key = "fc1000" + key[len("pred"):]
    key = _apply_renames(key, _BASIC_RESNET_RENAMES)
    key = _apply_renames(key, _fpn_renames(stage_names))
    return _apply_renames(key, _HEAD_RENAMES)


def _rename_weights_for_resnet(weights, stage_names):
    """Caffe2 blobs (name -> numpy array) -> OrderedDict of renamed tensors; ``_momentum`` blobs dropped."""
    names = sorted(name for name in weights if "_momentum" not in name)
    width = max((len(name) for name in names), default=1)
    logger.info("Remapping C2 weights")
    renamed = OrderedDict()
    for name in names:
        new_name = rename_c2_key(name, stage_names)
        logger.info("C2 name: %-*s mapped name: %s", width, name, new_name)
        renamed[new_name] = torch.tensor(weights[name])
    return renamed


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and nothing else, so a weights file cannot run code."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a Caffe2 weights file should hold only numpy arrays"
            )
        return super().find_class(module, name)


def _load_c2_pickled_weights(file_path):
    """The blob dict (name -> numpy array) of a Detectron/Caffe2 pickle."""
    with open(file_path, "rb") as f:
        payload = f.read()
    try:
        data = _WeightsUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(
            f"{file_path} is not a Caffe2 weights pickle of numpy arrays ({error}). Point "
            f"MODEL.WEIGHT at a Detectron .pkl, or at a .pth file for PyTorch weights."
        ) from error
    return data["blobs"] if "blobs" in data else data


def _rename_conv_weights_for_deformable_conv_layers(state_dict, cfg):
    """For stages with MODEL.RESNETS.STAGE_WITH_DCN, move conv2.{weight,bias} to conv2.conv.{weight,bias}."""
    for stage_index, stage_with_dcn in enumerate(cfg.MODEL.RESNETS.STAGE_WITH_DCN, 1):
        if not stage_with_dcn:
            continue
        pattern = re.compile(rf".*layer{stage_index}.*conv2\.(weight|bias)$")
        for old_key in [key for key in state_dict if pattern.match(key)]:
            new_key = re.sub(r"conv2\.(weight|bias)$", r"conv2.conv.\1", old_key)
            logger.info("Deformable conv: %s -> %s", old_key, new_key)
            state_dict[new_key] = state_dict.pop(old_key)
    return state_dict


C2_FORMAT_LOADER = Registry("C2_FORMAT_LOADER")


@C2_FORMAT_LOADER.register("R-50-C4")
@C2_FORMAT_LOADER.register("R-50-C5")
@C2_FORMAT_LOADER.register("R-101-C4")
@C2_FORMAT_LOADER.register("R-101-C5")
@C2_FORMAT_LOADER.register("R-50-FPN")
@C2_FORMAT_LOADER.register("R-50-FPN-RETINANET")
@C2_FORMAT_LOADER.register("R-101-FPN")
@C2_FORMAT_LOADER.register("R-101-FPN-RETINANET")
@C2_FORMAT_LOADER.register("R-152-FPN")
def load_resnet_c2_format(cfg, f):
    """ResNet-family bodies: rename with the stage names of the depth in MODEL.BACKBONE.CONV_BODY."""
    blobs = _load_c2_pickled_weights(f)
    arch = cfg.MODEL.BACKBONE.CONV_BODY
    for body_suffix in ("-C4", "-C5", "-FPN", "-RETINANET"):
        arch = arch.replace(body_suffix, "")
    state_dict = _rename_weights_for_resnet(blobs, _C2_STAGE_NAMES[arch])
    state_dict = _rename_conv_weights_for_deformable_conv_layers(state_dict, cfg)
    return dict(model=state_dict)


def load_c2_format(cfg, f):
    """Load the Caffe2 ``.pkl`` ``f`` for the body cfg.MODEL.BACKBONE.CONV_BODY; returns {"model": state dict}."""
    conv_body = cfg.MODEL.BACKBONE.CONV_BODY
    if conv_body not in C2_FORMAT_LOADER:
        raise KeyError(
            f"No Caffe2 weight converter for MODEL.BACKBONE.CONV_BODY '{conv_body}' (known: "
            f"{', '.join(sorted(C2_FORMAT_LOADER))}). Use a PyTorch .pth file in MODEL.WEIGHT for "
            f"this backbone, or register a converter in C2_FORMAT_LOADER."
        )
    return C2_FORMAT_LOADER[conv_body](cfg, f)
