"""Mask R-CNN loss: per-pixel binary cross-entropy on the ground-truth class's mask."""
import torch
from torch.nn import functional as F

from maskrcnn_benchmark.modeling.matcher import Matcher
from maskrcnn_benchmark.modeling.utils import cat, match_targets


def project_masks_on_boxes(segmentation_masks, proposals, discretization_size):
    """Mask targets: each instance cropped to its proposal and rasterised at M x M.

    With polygons (Detectron style) the polygons are shifted into the proposal's frame (float
    box, width x2 - x1 without +1, at least 1 pixel), scaled to M x M and rasterised by
    pycocotools; binary masks are cropped and bilinearly resized instead.

    Arguments:
        segmentation_masks (SegmentationMask): one instance per proposal.
        proposals (BoxList): the proposals, same image size.
        discretization_size (int): M (MODEL.ROI_MASK_HEAD.RESOLUTION).

    Returns:
        (R, M, M) float32 tensor of 0/1 on the proposals' device ((0,) when R = 0).
    """
    M = discretization_size
    device = proposals.bbox.device
    proposals = proposals.convert("xyxy")
    if segmentation_masks.size != proposals.size:
        raise ValueError(
            "mask targets: masks of image size {} do not match proposals of image size {}".format(
                segmentation_masks.size, proposals.size
            )
        )
    masks = []
    for segmentation_mask, proposal in zip(segmentation_masks, proposals.bbox.cpu()):
        scaled_mask = segmentation_mask.crop(proposal).resize((M, M))
        masks.append(scaled_mask.get_mask_tensor())
    if len(masks) == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    return torch.stack(masks, dim=0).to(device, dtype=torch.float32)


class MaskRCNNLossComputation(object):
    """Matches the (positive) proposals to ground truth again and computes the mask loss.

    Arguments:
        proposal_matcher (Matcher): the box head's matcher (0.5 / 0.5).
        discretization_size (int): side M of the mask targets (28 for FPN).
    """

    def __init__(self, proposal_matcher, discretization_size):
        self.proposal_matcher = proposal_matcher
        self.discretization_size = discretization_size

    def match_targets_to_proposals(self, proposal, target):
        """Per proposal, its matched ground truth (fields "labels", "masks", "matched_idxs")."""
        return match_targets(self.proposal_matcher, target, proposal, ["labels", "masks"])

    def prepare_targets(self, proposals, targets):
        """Per image: int64 labels of all proposals and (P, M, M) targets of the positive ones."""
        labels = []
        masks = []
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            matched_targets = self.match_targets_to_proposals(
                proposals_per_image, targets_per_image
            )
            matched_idxs = matched_targets.get_field("matched_idxs")

            labels_per_image = matched_targets.get_field("labels").to(dtype=torch.int64)
            labels_per_image[matched_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0

            positive_inds = torch.nonzero(labels_per_image > 0).squeeze(1)
            segmentation_masks = matched_targets.get_field("masks")[positive_inds]
            positive_proposals = proposals_per_image[positive_inds]
            masks.append(
                project_masks_on_boxes(
                    segmentation_masks, positive_proposals, self.discretization_size
                )
            )
            labels.append(labels_per_image)
        return labels, masks

    def __call__(self, proposals, mask_logits, targets):
        """
        Arguments:
            proposals (list[BoxList]): the positive proposals the logits were computed on.
            mask_logits (Tensor): (R, NUM_CLASSES, M, M), or (R, 1, M, M) holding each
                proposal's own-class channel only (MaskXRCNNC4Predictor given the labels).
            targets (list[BoxList]): ground truth with the fields "labels" and "masks".

        Returns:
            Scalar: BCE-with-logits of the ground-truth class channel, averaged over the
            pixels of the positive proposals; ``mask_logits.sum() * 0`` (still connected to
            the graph) when there is none.
        """
        labels, mask_targets = self.prepare_targets(proposals, targets)
        labels = cat(labels, dim=0)
        mask_targets = cat(mask_targets, dim=0)

        positive_inds = torch.nonzero(labels > 0).squeeze(1)
        labels_pos = labels[positive_inds]
        if mask_targets.numel() == 0:
            return mask_logits.sum() * 0
        channels = labels_pos if mask_logits.shape[1] > 1 else torch.zeros_like(labels_pos)
        return F.binary_cross_entropy_with_logits(
            mask_logits[positive_inds, channels], mask_targets
        )


def make_roi_mask_loss_evaluator(cfg):
    """MaskRCNNLossComputation configured by MODEL.ROI_HEADS and MODEL.ROI_MASK_HEAD.RESOLUTION."""
    matcher = Matcher(
        cfg.MODEL.ROI_HEADS.FG_IOU_THRESHOLD,
        cfg.MODEL.ROI_HEADS.BG_IOU_THRESHOLD,
        allow_low_quality_matches=False,
    )
    return MaskRCNNLossComputation(matcher, cfg.MODEL.ROI_MASK_HEAD.RESOLUTION)
