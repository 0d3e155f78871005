"""Mask post-processing: pick each detection's class mask and, optionally, paste it into the
image (upstream's Masker, one mask at a time on the CPU, or BatchedMasker, all at once on the
masks' device)."""
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


def _source_pixels(first, length, box_start, box_size, source_size):
    """Bilinear taps of the pixels ``first + k`` (k < ``length``) of boxes resized from
    ``source_size`` source pixels to ``box_size`` pixels starting at pixel ``box_start``.

    Follows torch's bilinear resize with align_corners False (the resize ``paste_mask_in_image``
    does): source position (u + 0.5) * source_size / box_size - 0.5, clamped at 0, for the box
    pixel u. Pixels past ``first + length - 1`` repeat the last one.

    Arguments:
        first, length, box_start, box_size (Tensor): (N,) int64; length >= 1.
        source_size (int)

    Returns:
        index (Tensor): (N, L) int64 pixel positions in the image, L = max(length).
        taps (tuple[Tensor, Tensor, Tensor, Tensor]): (N, L) lower and upper source indices
            (int64) and their weights (float32).
    """
    steps = torch.arange(int(length.max()), device=first.device)
    index = torch.minimum(first[:, None] + steps, (first + length - 1)[:, None])
    scale = float(source_size) / box_size.to(torch.float32)
    centre = (index - box_start[:, None]).to(torch.float32) + 0.5
    position = (scale[:, None] * centre - 0.5).clamp(min=0)
    lower = position.to(torch.int64).clamp(max=source_size - 1)
    upper_weight = (position - lower.to(torch.float32)).clamp(0, 1)
    upper = lower + (lower < source_size - 1).to(torch.int64)
    return index, (lower, upper, 1 - upper_weight, upper_weight)


def paste_masks_in_image(masks, boxes, im_h, im_w, thresh=0.5, padding=1, chunk_elements=1 << 24):
    """Paste D masks into an im_h x im_w image at their boxes in a few batched operations on the
    masks' device; the same pixels as ``paste_mask_in_image`` on each mask, up to the float
    rounding of the resize (probabilities within ~1e-5: a pixel flips only that close to thresh).

    The boxes are expanded and truncated to integers as there; the padded masks are resized by
    gathering their bilinear taps, columns first, over each box's part inside the image. Masks
    are processed in chunks of similar box size, of about ``chunk_elements`` window pixels each.

    Arguments:
        masks (Tensor): (D, M, M) probabilities.
        boxes (Tensor): (D, 4) xyxy boxes in image pixels.
        thresh (float): >= 0 gives bool masks (> thresh); < 0 keeps the float probabilities.

    Returns:
        (D, im_h, im_w) bool tensor (float with thresh < 0) on the masks' device.
    """
    padded, scale = expand_masks(masks.float()[:, None], padding=padding)
    padded = padded[:, 0]
    source_size = padded.shape[-1]
    x_0, y_0, x_1, y_1 = expand_boxes(boxes.float(), scale).to(torch.int32).to(torch.int64).unbind(dim=1)
    box_w = (x_1 - x_0 + 1).clamp(min=1)
    box_h = (y_1 - y_0 + 1).clamp(min=1)
    # The part of each box inside the image: columns [left, right), rows [top, bottom).
    left, right = x_0.clamp(0, im_w - 1), (x_1 + 1).clamp(max=im_w)
    top, bottom = y_0.clamp(0, im_h - 1), (y_1 + 1).clamp(max=im_h)
    inside = (right > left) & (bottom > top)
    width, height = (right - left).clamp(min=1), (bottom - top).clamp(min=1)

    dtype = torch.bool if thresh >= 0 else torch.float32
    result = torch.zeros((len(masks), im_h, im_w), dtype=dtype, device=masks.device)
    area = width * height
    order = torch.argsort(area, descending=True).tolist()
    area = area.tolist()
    start = 0
    while start < len(order):
        # The chunk's first mask has its largest window.
        count = max(1, chunk_elements // area[order[start]])
        chunk = torch.tensor(order[start : start + count], device=masks.device)
        start += len(chunk)
        cols, (x_lo, x_hi, wx_lo, wx_hi) = _source_pixels(
            left[chunk], width[chunk], x_0[chunk], box_w[chunk], source_size)
        rows, (y_lo, y_hi, wy_lo, wy_hi) = _source_pixels(
            top[chunk], height[chunk], y_0[chunk], box_h[chunk], source_size)
        source = padded[chunk]
        shape = (len(chunk), source_size, cols.shape[1])
        column_pass = (torch.gather(source, 2, x_lo[:, None].expand(shape)) * wx_lo[:, None]
                       + torch.gather(source, 2, x_hi[:, None].expand(shape)) * wx_hi[:, None])
        shape = (len(chunk), rows.shape[1], cols.shape[1])
        pasted = (torch.gather(column_pass, 1, y_lo[:, :, None].expand(shape)) * wy_lo[:, :, None]
                  + torch.gather(column_pass, 1, y_hi[:, :, None].expand(shape)) * wy_hi[:, :, None])
        if thresh >= 0:
            pasted = pasted > thresh
        pasted = pasted * inside[chunk][:, None, None]
        result[chunk[:, None, None], rows[:, :, None], cols[:, None, :]] = pasted
    return result


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


class BatchedMasker(Masker):
    """A Masker that pastes all of an image's masks at once on their own device
    (``paste_masks_in_image``): the same masks, without a Python loop or a copy to the CPU."""

    def forward_single_image(self, masks, boxes):
        """(D, 1, M, M) masks and a BoxList of D boxes -> (D, 1, H, W) image masks."""
        boxes = boxes.convert("xyxy")
        im_w, im_h = boxes.size
        pasted = paste_masks_in_image(
            masks[:, 0], boxes.bbox.to(masks.device), im_h, im_w, self.threshold, self.padding)
        return pasted[:, None]


PASTE_MODES = ("auto", "masker", "batched")


def make_masker(paste_mode, device, threshold=0.5, padding=1):
    """Masker or BatchedMasker by MODEL.ROI_MASK_HEAD.PASTE_MODE: "masker", "batched", or "auto"
    (batched on CUDA, Masker on the CPU)."""
    if paste_mode not in PASTE_MODES:
        raise ValueError(
            "MODEL.ROI_MASK_HEAD.PASTE_MODE is '{}'; use one of {}".format(paste_mode, ", ".join(PASTE_MODES)))
    batched = paste_mode == "batched" or (paste_mode == "auto" and torch.device(device).type == "cuda")
    return (BatchedMasker if batched else Masker)(threshold=threshold, padding=padding)


def make_roi_mask_post_processor(cfg):
    """MaskPostProcessor; it pastes the masks (padding 1) when MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS,
    thresholding at POSTPROCESS_MASKS_THRESHOLD, with the paster PASTE_MODE selects."""
    masker = None
    head = cfg.MODEL.ROI_MASK_HEAD
    if head.POSTPROCESS_MASKS:
        masker = make_masker(head.PASTE_MODE, cfg.MODEL.DEVICE, head.POSTPROCESS_MASKS_THRESHOLD)
    return MaskPostProcessor(masker)
