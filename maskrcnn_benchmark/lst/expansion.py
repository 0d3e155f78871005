"""Network expansion between LST phases (paper §3.2 "Network Expansion"; authors' get_finetune_pth.py).

Only the box predictor grows: its classifier gains one row per new class and its class-specific
box regressor four. The rows of the old classes are copied, so the expanded model scores the old
classes exactly as the previous one; every other tensor (scale_cls, bbox2mask, the mask head and
MLP_mask, the backbone, ...) is carried over untouched, because the mask filters of new classes
come from the shared transfer function T.
"""
from collections import OrderedDict

import torch

PREDICTOR_PREFIX = "roi_heads.box.predictor."
CLS_WEIGHT = PREDICTOR_PREFIX + "cls_score.weight"


def _find_predictor_prefix(state_dict):
    """The key prefix of the box predictor ("roi_heads.box.predictor." or "module.roi_heads...")."""
    prefixes = [key[: -len("cls_score.weight")] for key in state_dict if key.endswith(CLS_WEIGHT)]
    if len(prefixes) != 1:
        raise KeyError(
            "expected exactly one key ending with '{}' in the state dict, found {}: is this a "
            "Faster / Mask R-CNN checkpoint with an FPN box predictor?".format(CLS_WEIGHT, len(prefixes))
        )
    return prefixes[0]


def _grow_rows(tensor, num_rows, std, generator):
    """``tensor`` (R, ...) with rows appended up to ``num_rows``: N(0, std^2), or 0 when std is 0."""
    new_shape = (num_rows - tensor.shape[0],) + tuple(tensor.shape[1:])
    if std == 0:
        new_rows = torch.zeros(new_shape)
    else:
        new_rows = torch.randn(new_shape, generator=generator) * std
    return torch.cat([tensor, new_rows.to(dtype=tensor.dtype, device=tensor.device)], dim=0)


def _is_class_agnostic(bbox_rows, num_old_classes, key, cls_agnostic_bbox_reg):
    """Whether ``bbox_pred`` regresses one foreground box (8 rows) rather than 4 per class."""
    class_specific = bbox_rows == 4 * num_old_classes
    agnostic = bbox_rows == 8
    if not (class_specific or agnostic):
        raise ValueError(
            "{} has {} rows, neither 4 * {} (class-specific, one box per class of cls_score) nor 8 "
            "(MODEL.CLS_AGNOSTIC_BBOX_REG): the checkpoint's box predictor is inconsistent".format(
                key, bbox_rows, num_old_classes
            )
        )
    if cls_agnostic_bbox_reg is None:
        if class_specific and agnostic:
            raise ValueError(
                "{} has 8 rows for 2 classes, which fits both class-specific and class-agnostic box "
                "regression: pass cls_agnostic_bbox_reg (the model's MODEL.CLS_AGNOSTIC_BBOX_REG)".format(key)
            )
        return agnostic
    fits = agnostic if cls_agnostic_bbox_reg else class_specific
    if not fits:
        raise ValueError(
            "{} has {} rows, which does not fit cls_agnostic_bbox_reg={} with {} classes".format(
                key, bbox_rows, cls_agnostic_bbox_reg, num_old_classes
            )
        )
    return cls_agnostic_bbox_reg


def expand_box_predictor(state_dict, num_classes, std_cls=0.01, std_bbox=0.001, generator=None,
                         cls_agnostic_bbox_reg=None):
    """Grow the box predictor of ``state_dict`` to ``num_classes`` classes (background included).

    Arguments:
        state_dict (dict[str, Tensor]): a detector's state dict; keys may carry the
            DistributedDataParallel prefix "module.".
        num_classes (int): classes of the expanded model, background included (NUM_CLASSES).
        std_cls (float): std of the new cls_score rows, N(0, std_cls^2) (authors: 0.01).
        std_bbox (float): std of the new bbox_pred rows, N(0, std_bbox^2) (authors: 0.001).
        generator (torch.Generator, optional): CPU random source of the new rows.
        cls_agnostic_bbox_reg (bool, optional): whether bbox_pred is class-agnostic (8 rows,
            left as it is); None infers it from the shapes.

    Returns:
        OrderedDict: a new state dict, keys in the same order. cls_score.weight (C, D) becomes
        (num_classes, D) and its bias, if any, (num_classes,); a class-specific bbox_pred.weight
        (4C, D) becomes (4 num_classes, D) and its bias (4 num_classes,). Old rows are copied, new
        biases are 0. Every other tensor is the input's own object.

    Raises:
        ValueError: ``num_classes`` is smaller than the predictor's current size, or bbox_pred
        does not fit cls_score.
    """
    prefix = _find_predictor_prefix(state_dict)
    cls_weight_key = prefix + "cls_score.weight"
    num_old_classes = state_dict[cls_weight_key].shape[0]
    if num_classes < num_old_classes:
        raise ValueError(
            "cannot expand {} with {} rows to {} classes: the new NUM_CLASSES must be at least the "
            "current size (background included)".format(cls_weight_key, num_old_classes, num_classes)
        )
    bbox_weight_key = prefix + "bbox_pred.weight"
    agnostic = _is_class_agnostic(
        state_dict[bbox_weight_key].shape[0], num_old_classes, bbox_weight_key, cls_agnostic_bbox_reg
    )

    grown = {
        cls_weight_key: (num_classes, std_cls),
        prefix + "cls_score.bias": (num_classes, 0.0),
    }
    if not agnostic:
        grown[bbox_weight_key] = (4 * num_classes, std_bbox)
        grown[prefix + "bbox_pred.bias"] = (4 * num_classes, 0.0)

    expanded = OrderedDict()
    for key, value in state_dict.items():
        if key in grown:
            num_rows, std = grown[key]
            value = _grow_rows(value, num_rows, std, generator)
        expanded[key] = value
    return expanded
