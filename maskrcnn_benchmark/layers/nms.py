"""Greedy non-maximum suppression backed by ``_C`` (upstream's +1 box convention)."""
from maskrcnn_benchmark.layers._C_loader import _C, float32_under_autocast


def nms(boxes, scores, nms_thresh):
    """Indices of the boxes kept by greedy NMS, as an int64 tensor in ascending index order.

    boxes: (N, 4) [x1, y1, x2, y2] with inclusive corners (width = x2 - x1 + 1); scores: (N,).
    Boxes are visited by descending score, ties by ascending index; on the CPU a box is suppressed when its IoU with a kept box is
    >= ``nms_thresh`` (> on CUDA, as upstream). Runs in float32 under autocast.
    """
    boxes, scores = float32_under_autocast(boxes, scores)
    return _C.nms(boxes, scores, nms_thresh)


def batched_nms(boxes, scores, labels, nms_thresh):
    """``nms`` run independently for each label (e.g. class) in one call.

    boxes: (N, 4); scores: (N,); labels: (N,) int64. A box is suppressed only by boxes of its own label,
    so the kept set is the union over labels of ``nms`` on that label's boxes alone (same ties, same
    thresholds). Returns the kept indices as an int64 tensor in ascending index order.
    """
    boxes, scores = float32_under_autocast(boxes, scores)
    return _C.batched_nms(boxes, scores, labels, nms_thresh)
