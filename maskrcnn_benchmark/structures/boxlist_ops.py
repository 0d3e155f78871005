"""Operations on BoxLists: NMS, small-box removal, pairwise IoU and concatenation.

All of them use the inclusive-pixel convention (width = x2 - x1 + 1), as upstream.
"""
import torch

from .bounding_box import TO_REMOVE, BoxList


def boxlist_nms(boxlist, nms_thresh, max_proposals=-1, score_field="scores"):
    """Non-maximum suppression of a BoxList by the scores in field ``score_field``.

    Arguments:
        boxlist (BoxList)
        nms_thresh (float): IoU threshold; a value <= 0 disables NMS.
        max_proposals (int): if > 0, keep at most this many boxes after NMS.
        score_field (str)

    Returns the kept boxes in the input's mode, in the order ``layers.nms`` returns them
    (ascending index).
    """
    if nms_thresh <= 0:
        return boxlist
    # Imported here so that structures stay importable before the _C extension is built.
    from maskrcnn_benchmark.layers import nms as _box_nms

    mode = boxlist.mode
    boxlist = boxlist.convert("xyxy")
    keep = _box_nms(boxlist.bbox, boxlist.get_field(score_field), nms_thresh)
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return boxlist[keep].convert(mode)


def remove_small_boxes(boxlist, min_size):
    """Keep the boxes whose width and height (x2 - x1 + 1, y2 - y1 + 1) are both >= min_size."""
    _, _, ws, hs = boxlist.convert("xywh").bbox.unbind(dim=1)
    keep = ((ws >= min_size) & (hs >= min_size)).nonzero().squeeze(1)
    return boxlist[keep]


def boxlist_iou(boxlist1, boxlist2):
    """(N, M) IoU between the boxes of two BoxLists of the same image (inclusive pixels)."""
    if boxlist1.size != boxlist2.size:
        raise RuntimeError(
            "boxlists should have same image size, got {}, {}".format(boxlist1, boxlist2)
        )
    boxlist1 = boxlist1.convert("xyxy")
    boxlist2 = boxlist2.convert("xyxy")
    area1 = boxlist1.area()
    area2 = boxlist2.area()
    box1, box2 = boxlist1.bbox, boxlist2.bbox

    top_left = torch.max(box1[:, None, :2], box2[:, :2])  # (N, M, 2)
    bottom_right = torch.min(box1[:, None, 2:], box2[:, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left + TO_REMOVE).clamp(min=0)  # (N, M, 2)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def _cat(tensors, dim=0):
    """torch.cat that returns a lone tensor as is, without a copy."""
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def cat_boxlist(bboxes):
    """Concatenate BoxLists of the same image size, mode and field names into one BoxList.

    Fields must be tensors (concatenated along dim 0).
    """
    if not isinstance(bboxes, (list, tuple)) or len(bboxes) == 0:
        raise ValueError("cat_boxlist expects a non-empty list of BoxList")
    if not all(isinstance(bbox, BoxList) for bbox in bboxes):
        raise TypeError(
            "cat_boxlist expects BoxList items, got {}".format([type(b).__name__ for b in bboxes])
        )

    size = bboxes[0].size
    if any(bbox.size != size for bbox in bboxes):
        raise ValueError(
            "cat_boxlist needs one image size, got {}".format([bbox.size for bbox in bboxes])
        )
    mode = bboxes[0].mode
    if any(bbox.mode != mode for bbox in bboxes):
        raise ValueError(
            "cat_boxlist needs one mode, got {}; convert() them first".format(
                [bbox.mode for bbox in bboxes]
            )
        )
    fields = set(bboxes[0].fields())
    if any(set(bbox.fields()) != fields for bbox in bboxes):
        raise ValueError(
            "cat_boxlist needs the same fields in every BoxList, got {}".format(
                [sorted(bbox.fields()) for bbox in bboxes]
            )
        )

    result = BoxList(_cat([bbox.bbox for bbox in bboxes], dim=0), size, mode)
    for field in fields:
        data = [bbox.get_field(field) for bbox in bboxes]
        if not all(isinstance(d, torch.Tensor) for d in data):
            raise TypeError(
                "cat_boxlist can only concatenate tensor fields; field '{}' holds {}".format(
                    field, sorted({type(d).__name__ for d in data})
                )
            )
        result.add_field(field, _cat(data, dim=0))
    return result
