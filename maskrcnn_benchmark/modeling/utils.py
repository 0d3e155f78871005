"""Small helpers shared by the modeling code."""
import torch

from maskrcnn_benchmark.structures.boxlist_ops import boxlist_iou


def cat(tensors, dim=0):
    """``torch.cat`` that returns a lone tensor as is, without a copy.

    Arguments:
        tensors (list[Tensor] or tuple[Tensor]): at least one tensor.
        dim (int): dimension to concatenate along.
    """
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(
            "cat expects a list or tuple of tensors, got {}".format(type(tensors).__name__)
        )
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def match_targets(matcher, target, boxes, fields=()):
    """Match ``boxes`` (anchors or proposals) to the ground truth ``target`` with ``matcher``.

    Returns a BoxList with one row per box: its matched ground-truth box, the target's ``fields``
    and "matched_idxs" (the matcher's output: >= 0 matched, -1 below low, -2 between thresholds).
    Unmatched rows carry ground truth 0; callers read "matched_idxs" to label them.
    """
    matched_idxs = matcher(boxlist_iou(target, boxes))
    matched_targets = target.copy_with_fields(list(fields))[matched_idxs.clamp(min=0)]
    matched_targets.add_field("matched_idxs", matched_idxs)
    return matched_targets
