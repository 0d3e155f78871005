"""Greedy non-maximum suppression backed by ``_C`` (upstream's +1 box convention)."""
from maskrcnn_benchmark.layers._C_loader import _C, float32_under_autocast


def nms(boxes, scores, nms_thresh):
    """Indices of the boxes kept by greedy NMS, as an int64 tensor in ascending index order.

    boxes: (N, 4) [x1, y1, x2, y2] with inclusive corners (width = x2 - x1 + 1); scores: (N,).
    Boxes are visited by descending score; on the CPU a box is suppressed when its IoU with a kept box is
    >= ``nms_thresh`` (> on CUDA, as upstream). Runs in float32 under autocast.
    """
    boxes, scores = float32_under_autocast(boxes, scores)
    return _C.nms(boxes, scores, nms_thresh)
