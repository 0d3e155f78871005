"""Fast R-CNN loss: RoI sampling, classification loss (cross-entropy by default) and box smooth-L1."""
import torch
from torch.nn import functional as F

from maskrcnn_benchmark.layers import smooth_l1_loss
from maskrcnn_benchmark.modeling.balanced_positive_negative_sampler import (
    BalancedPositiveNegativeSampler,
)
from maskrcnn_benchmark.modeling.box_coder import BoxCoder
from maskrcnn_benchmark.modeling.matcher import Matcher
from maskrcnn_benchmark.modeling.utils import cat, match_targets


class FastRCNNLossComputation(object):
    """Samples the RoIs of a training batch and computes the box-head losses.

    ``subsample`` must run first: it matches proposals to ground truth, samples them and keeps
    the sampled proposals (with fields "labels" and "regression_targets") in ``self._proposals``;
    ``__call__`` then computes the losses on the predictions for exactly those proposals.

    Arguments:
        proposal_matcher (Matcher): IoU matcher (0.5 / 0.5, no low-quality matches).
        fg_bg_sampler (BalancedPositiveNegativeSampler): 512 RoIs per image, 25 % positive.
        box_coder (BoxCoder): weights (10, 10, 5, 5).
        cls_agnostic_bbox_reg (bool): regress one foreground box (columns 4:8) for all classes.
        active_class_only (bool): LST's instance-level balanced replay (MODEL.LST.
            ROI_ACTIVE_CLASS_ONLY): in an image whose targets carry the int64 field
            "active_label" k > 0, proposals matched to a box of another class are ignored
            (label -1), so only class k gives positives. Targets without the field, or with
            active_label 0, are labelled as upstream.
        classification_loss (callable, optional): (logits (R, W), labels (R,)) -> scalar, e.g.
            a module of classification_losses.py; None: softmax cross-entropy (upstream).
    """

    def __init__(self, proposal_matcher, fg_bg_sampler, box_coder, cls_agnostic_bbox_reg=False,
                 active_class_only=False, classification_loss=None):
        self.proposal_matcher = proposal_matcher
        self.fg_bg_sampler = fg_bg_sampler
        self.box_coder = box_coder
        self.cls_agnostic_bbox_reg = cls_agnostic_bbox_reg
        self.active_class_only = active_class_only
        self.classification_loss = classification_loss if classification_loss is not None else F.cross_entropy

    def match_targets_to_proposals(self, proposal, target):
        """Per proposal, its matched ground truth (with field "labels", and "active_label" when
        the target has it) and "matched_idxs"."""
        fields = ["labels"]
        if target.has_field("active_label"):
            fields.append("active_label")
        return match_targets(self.proposal_matcher, target, proposal, fields)

    def prepare_targets(self, proposals, targets):
        """Per image: int64 labels (0 background, -1 ignored) and (R, 4) regression targets.

        With ``active_class_only``, a foreground proposal whose matched box has active_label
        k > 0 and a label other than k is labelled -1 (neither positive nor negative).
        """
        labels = []
        regression_targets = []
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            matched_targets = self.match_targets_to_proposals(
                proposals_per_image, targets_per_image
            )
            matched_idxs = matched_targets.get_field("matched_idxs")

            labels_per_image = matched_targets.get_field("labels").to(dtype=torch.int64)
            labels_per_image[matched_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0
            labels_per_image[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1
            if self.active_class_only and matched_targets.has_field("active_label"):
                active_label = matched_targets.get_field("active_label").to(dtype=torch.int64)
                other_class = (active_label > 0) & (labels_per_image != active_label)
                labels_per_image[(matched_idxs >= 0) & other_class] = -1

            regression_targets.append(
                self.box_coder.encode(matched_targets.bbox, proposals_per_image.bbox)
            )
            labels.append(labels_per_image)
        return labels, regression_targets

    def subsample(self, proposals, targets):
        """Sample positive and negative RoIs per image and remember them for the loss.

        Arguments:
            proposals (list[BoxList]): xyxy proposals per image (the RPN's, ground truth included).
            targets (list[BoxList]): ground truth per image, with the field "labels".

        Returns:
            list[BoxList]: the sampled proposals of each image, with the fields "labels" and
            "regression_targets" added (the input BoxLists receive these fields too).
        """
        labels, regression_targets = self.prepare_targets(proposals, targets)
        sampled_pos_inds, sampled_neg_inds = self.fg_bg_sampler(labels)

        sampled = []
        for proposals_per_image, labels_per_image, targets_per_image, pos, neg in zip(
            proposals, labels, regression_targets, sampled_pos_inds, sampled_neg_inds
        ):
            proposals_per_image.add_field("labels", labels_per_image)
            proposals_per_image.add_field("regression_targets", targets_per_image)
            sampled_inds = torch.nonzero(pos | neg).squeeze(1)
            sampled.append(proposals_per_image[sampled_inds])

        self._proposals = sampled
        return sampled

    def __call__(self, class_logits, box_regression):
        """
        Arguments:
            class_logits (list[Tensor]): (R, W) logits of the sampled RoIs (W = NUM_CLASSES, or
                NUM_CLASSES + 1 with the seesaw loss's objectness column).
            box_regression (list[Tensor]): (R, 4 * K) deltas of the sampled RoIs.

        Returns:
            classification_loss (Tensor): the classification loss (upstream: cross-entropy)
                averaged over all sampled RoIs.
            box_loss (Tensor): smooth-L1 (beta 1) of the ground-truth class deltas of the
                positive RoIs, summed and divided by the number of sampled RoIs.
        """
        if not hasattr(self, "_proposals"):
            raise RuntimeError(
                "FastRCNNLossComputation: subsample() must be called before computing the loss"
            )
        class_logits = cat(class_logits, dim=0)
        box_regression = cat(box_regression, dim=0)
        device = class_logits.device

        proposals = self._proposals
        labels = cat([proposal.get_field("labels") for proposal in proposals], dim=0)
        regression_targets = cat(
            [proposal.get_field("regression_targets") for proposal in proposals], dim=0
        )

        classification_loss = self.classification_loss(class_logits, labels)

        sampled_pos_inds_subset = torch.nonzero(labels > 0).squeeze(1)
        labels_pos = labels[sampled_pos_inds_subset]
        if self.cls_agnostic_bbox_reg:
            map_inds = torch.tensor([4, 5, 6, 7], device=device)
        else:
            map_inds = 4 * labels_pos[:, None] + torch.tensor([0, 1, 2, 3], device=device)

        box_loss = smooth_l1_loss(
            box_regression[sampled_pos_inds_subset[:, None], map_inds],
            regression_targets[sampled_pos_inds_subset],
            size_average=False,
            beta=1,
        )
        box_loss = box_loss / labels.numel()
        return classification_loss, box_loss


def make_roi_box_loss_evaluator(cfg, classification_loss=None):
    """FastRCNNLossComputation configured by MODEL.ROI_HEADS, MODEL.CLS_AGNOSTIC_BBOX_REG and
    MODEL.LST.ROI_ACTIVE_CLASS_ONLY, with ``classification_loss`` (None: softmax cross-entropy)."""
    roi_heads = cfg.MODEL.ROI_HEADS
    matcher = Matcher(
        roi_heads.FG_IOU_THRESHOLD, roi_heads.BG_IOU_THRESHOLD, allow_low_quality_matches=False
    )
    box_coder = BoxCoder(weights=roi_heads.BBOX_REG_WEIGHTS)
    fg_bg_sampler = BalancedPositiveNegativeSampler(
        roi_heads.BATCH_SIZE_PER_IMAGE, roi_heads.POSITIVE_FRACTION
    )
    return FastRCNNLossComputation(
        matcher,
        fg_bg_sampler,
        box_coder,
        cfg.MODEL.CLS_AGNOSTIC_BBOX_REG,
        active_class_only=cfg.MODEL.LST.ROI_ACTIVE_CLASS_ONLY,
        classification_loss=classification_loss,
    )
