"""RPN losses: objectness (binary cross-entropy) and box regression (smooth L1) on sampled anchors."""
import torch
from torch.nn import functional as F

from maskrcnn_benchmark.layers import smooth_l1_loss
from maskrcnn_benchmark.modeling.balanced_positive_negative_sampler import (
    BalancedPositiveNegativeSampler,
)
from maskrcnn_benchmark.modeling.matcher import Matcher
from maskrcnn_benchmark.modeling.utils import match_targets
from maskrcnn_benchmark.structures.boxlist_ops import cat_boxlist

from .utils import concat_box_prediction_layers


class RPNLossComputation(object):
    """Labels anchors by IoU with the ground truth, samples a batch of them and computes the
    losses.

    Anchors are labelled 1 (matched), 0 (best IoU below the low threshold) or -1 (ignored:
    between the thresholds, or not visible, i.e. straddling the image border).

    Arguments:
        proposal_matcher (Matcher)
        fg_bg_sampler (BalancedPositiveNegativeSampler)
        box_coder (BoxCoder)
        generate_labels_func (callable): BoxList of matched targets (with the field
            "matched_idxs") -> (R,) labels, > 0 for foreground.
    """

    def __init__(self, proposal_matcher, fg_bg_sampler, box_coder, generate_labels_func):
        self.proposal_matcher = proposal_matcher
        self.fg_bg_sampler = fg_bg_sampler
        self.box_coder = box_coder
        self.generate_labels_func = generate_labels_func

    def match_targets_to_anchors(self, anchor, target, copied_fields=()):
        """The ground-truth box matched to each anchor, with ``copied_fields`` and "matched_idxs"."""
        return match_targets(self.proposal_matcher, target, anchor, copied_fields)

    def prepare_targets(self, anchors, targets):
        """
        Arguments:
            anchors (list[BoxList]): all anchors of each image, with "visibility".
            targets (list[BoxList]): ground truth of each image.

        Returns:
            labels (list[Tensor]): (R_i,) float 1 / 0 / -1 per image.
            regression_targets (list[Tensor]): (R_i, 4) deltas to the matched box.
        """
        labels = []
        regression_targets = []
        for anchors_per_image, targets_per_image in zip(anchors, targets):
            matched_targets = self.match_targets_to_anchors(anchors_per_image, targets_per_image)
            matched_idxs = matched_targets.get_field("matched_idxs")

            labels_per_image = self.generate_labels_func(matched_targets).to(dtype=torch.float32)
            labels_per_image[matched_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0
            labels_per_image[~anchors_per_image.get_field("visibility")] = -1
            labels_per_image[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1

            regression_targets_per_image = self.box_coder.encode(
                matched_targets.bbox, anchors_per_image.bbox
            )
            labels.append(labels_per_image)
            regression_targets.append(regression_targets_per_image)
        return labels, regression_targets

    def __call__(self, anchors, objectness, box_regression, targets):
        """
        Arguments:
            anchors (list[list[BoxList]]): anchors[image][level].
            objectness (list[Tensor]): (N, A, H_l, W_l) logits per level.
            box_regression (list[Tensor]): (N, A * 4, H_l, W_l) deltas per level.
            targets (list[BoxList]): ground truth of each image.

        Returns:
            objectness_loss (Tensor): BCE averaged over the sampled anchors of the batch.
            box_loss (Tensor): smooth L1 (beta 1/9) summed over the sampled positives and
                divided by the number of sampled anchors of the batch.
        """
        anchors = [cat_boxlist(anchors_per_image) for anchors_per_image in anchors]
        labels, regression_targets = self.prepare_targets(anchors, targets)
        sampled_pos_inds, sampled_neg_inds = self.fg_bg_sampler(labels)
        sampled_pos_inds = torch.nonzero(torch.cat(sampled_pos_inds, dim=0)).squeeze(1)
        sampled_neg_inds = torch.nonzero(torch.cat(sampled_neg_inds, dim=0)).squeeze(1)
        sampled_inds = torch.cat([sampled_pos_inds, sampled_neg_inds], dim=0)

        objectness, box_regression = concat_box_prediction_layers(objectness, box_regression)
        objectness = objectness.squeeze(1)

        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)

        box_loss = smooth_l1_loss(
            box_regression[sampled_pos_inds],
            regression_targets[sampled_pos_inds],
            beta=1.0 / 9,
            size_average=False,
        ) / sampled_inds.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness[sampled_inds], labels[sampled_inds]
        )
        return objectness_loss, box_loss


def generate_rpn_labels(matched_targets):
    """Foreground (True) where an anchor was matched to a ground-truth box."""
    return matched_targets.get_field("matched_idxs") >= 0


def make_rpn_loss_evaluator(cfg, box_coder):
    """RPNLossComputation from MODEL.RPN: FG/BG_IOU_THRESHOLD (low-quality matches allowed),
    BATCH_SIZE_PER_IMAGE and POSITIVE_FRACTION."""
    matcher = Matcher(
        cfg.MODEL.RPN.FG_IOU_THRESHOLD,
        cfg.MODEL.RPN.BG_IOU_THRESHOLD,
        allow_low_quality_matches=True,
    )
    fg_bg_sampler = BalancedPositiveNegativeSampler(
        cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE, cfg.MODEL.RPN.POSITIVE_FRACTION
    )
    return RPNLossComputation(matcher, fg_bg_sampler, box_coder, generate_rpn_labels)
