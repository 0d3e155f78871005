"""Mask post-processing: pick each detection's class mask and, optionally, paste it into the
image."""
import torch
from torch import nn

from maskrcnn_benchmark.layers.misc import interpolate
from maskrcnn_benchmark.structures.bounding_box import BoxList


class MaskPostProcessor(nn.Module):
    """Adds the field "mask" to every detection: the sigmoid of its predicted class's logits.

    Arguments:
        masker (Masker, optional): if given, the masks are pasted into the image, so "mask"
            holds (D, 1, H, W) full-image masks instead of (D, 1, M, M) probabilities.
    """

    def __init__(self, masker=None):
        super(MaskPostProcessor, self).__init__()
        self.masker = masker

    def forward(self, x, boxes):
        """
        Arguments:
            x (Tensor): (D, NUM_CLASSES, M, M) mask logits of the detections of all images, or
                (D, 1, M, M) holding each detection's own-class channel only.
            boxes (list[BoxList]): the detections of each image, with the field "labels".

        Returns:
            list[BoxList]: per image, the detections with their fields plus "mask".
        """
        mask_prob = x.sigmoid()
        if x.shape[1] > 1:
            labels = torch.cat([bbox.get_field("labels") for bbox in boxes])
            index = torch.arange(x.shape[0], device=labels.device)
            mask_prob = mask_prob[index, labels][:, None]
        mask_prob = mask_prob.split([len(box) for box in boxes], dim=0)

        if self.masker:
            mask_prob = self.masker(mask_prob, boxes)

        results = []
        for prob, box in zip(mask_prob, boxes):
            bbox = BoxList(box.bbox, box.size, mode="xyxy")
            for field in box.fields():
                bbox.add_field(field, box.get_field(field))
            bbox.add_field("mask", prob)
            results.append(bbox)
        return results


def expand_boxes(boxes, scale):
    """(N, 4) xyxy boxes scaled by ``scale`` about their centres (widths without +1)."""
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), dim=1)


def expand_masks(mask, padding):
    """Zero-pad (N, 1, M, M) masks by ``padding`` on each side.

    Returns the (N, 1, M + 2p, M + 2p) masks and the scale (M + 2p) / M that the boxes must
    grow by for the padded masks to cover the same pixels.
    """
    N, M = mask.shape[0], mask.shape[-1]
    pad2 = 2 * padding
    padded_mask = mask.new_zeros((N, 1, M + pad2, M + pad2))
    padded_mask[:, :, padding : M + padding, padding : M + padding] = mask
    return padded_mask, float(M + pad2) / M


def paste_mask_in_image(mask, box, im_h, im_w, thresh=0.5, padding=1):
    """Paste one M x M mask into an im_h x im_w image at ``box``, as upstream does.

    The mask is padded by ``padding``, the box expanded by (M + 2p) / M about its centre and
    truncated to integers; the padded mask is resized bilinearly (align_corners False) to the
    box's (y2 - y1 + 1, x2 - x1 + 1) pixels and thresholded (> thresh) before the copy.

    Arguments:
        mask (Tensor): (M, M) probabilities.
        box (Tensor): (4,) xyxy box in image pixels.
        thresh (float): >= 0 gives a bool mask; < 0 keeps the float probabilities.

    Returns:
        (im_h, im_w) bool tensor (float with thresh < 0), zero outside the box.
    """
    padded_mask, scale = expand_masks(mask.float()[None, None], padding=padding)
    box = expand_boxes(box.float()[None], scale)[0].to(dtype=torch.int32).tolist()

    w = max(box[2] - box[0] + 1, 1)
    h = max(box[3] - box[1] + 1, 1)
    mask = interpolate(padded_mask, size=(h, w), mode="bilinear", align_corners=False)[0, 0]

    if thresh >= 0:
        mask = mask > thresh
    im_mask = torch.zeros((im_h, im_w), dtype=mask.dtype)
    x_0, x_1 = max(box[0], 0), min(box[2] + 1, im_w)
    y_0, y_1 = max(box[1], 0), min(box[3] + 1, im_h)
    if x_1 > x_0 and y_1 > y_0:
        im_mask[y_0:y_1, x_0:x_1] = mask[y_0 - box[1] : y_1 - box[1], x_0 - box[0] : x_1 - box[0]]
    return im_mask


class Masker(object):
    """Pastes M x M masks into their images at the locations of their boxes (on the CPU).

    Arguments:
        threshold (float): binarisation threshold (> threshold); < 0 keeps probabilities.
        padding (int): pixels of zero padding around each mask before pasting.
    """

    def __init__(self, threshold=0.5, padding=1):
        self.threshold = threshold
        self.padding = padding

    def forward_single_image(self, masks, boxes):
        """(D, 1, M, M) masks and a BoxList of D boxes -> (D, 1, H, W) image masks."""
        boxes = boxes.convert("xyxy")
        im_w, im_h = boxes.size
        res = [
            paste_mask_in_image(mask[0], box, im_h, im_w, self.threshold, self.padding)
            for mask, box in zip(masks.cpu(), boxes.bbox.cpu())
        ]
        if len(res) > 0:
            return torch.stack(res, dim=0)[:, None]
        dtype = torch.bool if self.threshold >= 0 else masks.dtype
        return torch.zeros((0, 1, im_h, im_w), dtype=dtype)

    def __call__(self, masks, boxes):
        """
        Arguments:
            masks (list[Tensor]): per image, (D_i, 1, M, M) mask probabilities.
            boxes (list[BoxList] or BoxList): per image, the D_i boxes.

        Returns:
            list[Tensor]: per image, (D_i, 1, H, W) pasted masks.
        """
        if isinstance(boxes, BoxList):
            boxes = [boxes]
        if len(boxes) != len(masks):
            raise ValueError(
                "Masker: got masks for {} images but boxes for {}".format(len(masks), len(boxes))
            )
        results = []
        for mask, box in zip(masks, boxes):
            if mask.shape[0] != len(box):
                raise ValueError(
                    "Masker: {} masks for {} boxes; they must correspond one to one".format(
                        mask.shape[0], len(box)
                    )
                )
            results.append(self.forward_single_image(mask, box))
        return results


def make_roi_mask_post_processor(cfg):
    """MaskPostProcessor; it pastes the masks (Masker, padding 1) when
    MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS, thresholding at POSTPROCESS_MASKS_THRESHOLD."""
    masker = None
    if cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS:
        masker = Masker(threshold=cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD, padding=1)
    return MaskPostProcessor(masker)
