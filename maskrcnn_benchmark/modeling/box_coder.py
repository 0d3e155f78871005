"""Encoding of boxes as (dx, dy, dw, dh) deltas relative to reference boxes, and back.

Boxes are (x1, y1, x2, y2) in the inclusive-pixel convention: width = x2 - x1 + 1.
"""
import math

import torch

# Width of an inclusive-pixel box is x2 - x1 + TO_REMOVE.
TO_REMOVE = 1


class BoxCoder(object):
    """Turns boxes into regression targets and regression outputs into boxes.

    Arguments:
        weights (4-tuple of float): (wx, wy, ww, wh) that scale dx, dy, dw, dh; (1, 1, 1, 1)
            for the RPN, (10, 10, 5, 5) for the box head.
        bbox_xform_clip (float): upper bound of dw and dh before exp() in ``decode``,
            log(1000 / 16) by default, so that a box grows at most 62.5 times.
    """

    def __init__(self, weights, bbox_xform_clip=math.log(1000.0 / 16)):
        if len(weights) != 4:
            raise ValueError("BoxCoder weights should be (wx, wy, ww, wh), got {!r}".format(weights))
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes, proposals):
        """Deltas that take each proposal to its reference box.

        Arguments:
            reference_boxes (Tensor): (N, 4) target boxes (e.g. matched ground truth).
            proposals (Tensor): (N, 4) boxes the deltas are relative to (e.g. anchors).

        Returns:
            (N, 4) tensor of weighted (dx, dy, dw, dh).
        """
        ex_widths = proposals[:, 2] - proposals[:, 0] + TO_REMOVE
        ex_heights = proposals[:, 3] - proposals[:, 1] + TO_REMOVE
        ex_ctr_x = proposals[:, 0] + 0.5 * ex_widths
        ex_ctr_y = proposals[:, 1] + 0.5 * ex_heights

        gt_widths = reference_boxes[:, 2] - reference_boxes[:, 0] + TO_REMOVE
        gt_heights = reference_boxes[:, 3] - reference_boxes[:, 1] + TO_REMOVE
        gt_ctr_x = reference_boxes[:, 0] + 0.5 * gt_widths
        gt_ctr_y = reference_boxes[:, 1] + 0.5 * gt_heights

        wx, wy, ww, wh = self.weights
        targets_dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        targets_dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        targets_dw = ww * torch.log(gt_widths / ex_widths)
        targets_dh = wh * torch.log(gt_heights / ex_heights)
        return torch.stack((targets_dx, targets_dy, targets_dw, targets_dh), dim=1)

    def decode(self, rel_codes, boxes):
        """Apply deltas to boxes.

        Arguments:
            rel_codes (Tensor): (N, 4 * K) weighted deltas, K sets per box (e.g. one per class).
            boxes (Tensor): (N, 4) reference boxes.

        Returns:
            (N, 4 * K) decoded boxes in rel_codes' dtype. x2 = ctr_x + 0.5 * w - 1, the
            inverse of ``encode``'s +1 width.
        """
        boxes = boxes.to(rel_codes.dtype)

        widths = boxes[:, 2] - boxes[:, 0] + TO_REMOVE
        heights = boxes[:, 3] - boxes[:, 1] + TO_REMOVE
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        # Clamped so that exp() cannot overflow on wild predictions.
        dw = torch.clamp(rel_codes[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(rel_codes[:, 3::4] / wh, max=self.bbox_xform_clip)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        pred_boxes = torch.zeros_like(rel_codes)
        pred_boxes[:, 0::4] = pred_ctr_x - 0.5 * pred_w
        pred_boxes[:, 1::4] = pred_ctr_y - 0.5 * pred_h
        pred_boxes[:, 2::4] = pred_ctr_x + 0.5 * pred_w - TO_REMOVE
        pred_boxes[:, 3::4] = pred_ctr_y + 0.5 * pred_h - TO_REMOVE
        return pred_boxes
