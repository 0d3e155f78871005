"""The mask head: feature extractor + predictor, with its loss and post-processor."""
import inspect

import torch

from maskrcnn_benchmark.structures.bounding_box import BoxList

from .inference import make_roi_mask_post_processor
from .loss import make_roi_mask_loss_evaluator
from .roi_mask_feature_extractors import make_roi_mask_feature_extractor
from .roi_mask_predictors import make_roi_mask_predictor


def keep_only_positive_boxes(boxes):
    """The boxes with ``labels > 0``.

    Arguments:
        boxes (list[BoxList]): per image, boxes with the field "labels".

    Returns:
        positive_boxes (list[BoxList]): per image, the positive boxes.
        positive_inds (list[Tensor]): per image, the (R_i,) bool mask of the positive boxes.
    """
    if not isinstance(boxes, (list, tuple)) or not all(isinstance(b, BoxList) for b in boxes):
        raise TypeError("keep_only_positive_boxes expects a list of BoxList")
    positive_boxes = []
    positive_inds = []
    for boxes_per_image in boxes:
        if not boxes_per_image.has_field("labels"):
            raise KeyError(
                "keep_only_positive_boxes needs the field 'labels' (set by the box head's "
                "subsample)"
            )
        inds_mask = boxes_per_image.get_field("labels") > 0
        positive_boxes.append(boxes_per_image[inds_mask.nonzero().squeeze(1)])
        positive_inds.append(inds_mask)
    return positive_boxes, positive_inds


class ROIMaskHead(torch.nn.Module):
    """Predicts a mask per positive RoI (training) or per detection (test).

    Arguments:
        cfg: config (MODEL.ROI_MASK_HEAD).
        in_channels (int): channels of the backbone features.
    """

    def __init__(self, cfg, in_channels):
        super(ROIMaskHead, self).__init__()
        self.cfg = cfg.clone()
        self.feature_extractor = make_roi_mask_feature_extractor(cfg, in_channels)
        self.predictor = make_roi_mask_predictor(cfg, self.feature_extractor.out_channels)
        # the predictors here compute only each RoI's own class channel when given its labels
        self._predictor_takes_labels = "labels" in inspect.signature(self.predictor.forward).parameters
        self.post_processor = make_roi_mask_post_processor(cfg)
        self.loss_evaluator = make_roi_mask_loss_evaluator(cfg)

    def forward(self, features, proposals, targets=None, class_weights=None):
        """
        Arguments:
            features (list[Tensor] or Tensor): the backbone's feature maps; in training with
                SHARE_BOX_FEATURE_EXTRACTOR, the box head's RoI features instead.
            proposals (list[BoxList]): in training the box head's sampled proposals (with
                "labels"), at test time its detections.
            targets (list[BoxList], optional): ground truth with "labels" and "masks".
            class_weights (Tensor, optional): (NUM_CLASSES, M) per-class mask filters
                T(cls_score.weight); required with MODEL.ROI_MASK_HEAD.USE_BBOX2MASK.

        Returns:
            x (Tensor): the extractor's features of the RoIs.
            proposals (list[BoxList]): in training the input proposals, at test time the
                detections with the field "mask".
            losses (dict[str, Tensor]): "loss_mask" in training, empty at test time.
        """
        if self.training:
            all_proposals = proposals
            proposals, positive_inds = keep_only_positive_boxes(proposals)
        if self.training and self.cfg.MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR:
            x = features[torch.cat(positive_inds, dim=0)]
        else:
            x = self.feature_extractor(features, proposals)
        labels = torch.cat([p.get_field("labels") for p in proposals]) if proposals else None
        if self.cfg.MODEL.ROI_MASK_HEAD.USE_BBOX2MASK:
            if class_weights is None:
                raise ValueError(
                    "MODEL.ROI_MASK_HEAD.USE_BBOX2MASK needs the transferred class weights: call "
                    "the mask head with class_weights=bbox2mask(cls_score.weight)"
                )
            mask_logits = self.predictor(x, class_weights, labels)
        elif self._predictor_takes_labels:
            mask_logits = self.predictor(x, labels=labels)
        else:
            mask_logits = self.predictor(x)

        if not self.training:
            return x, self.post_processor(mask_logits, proposals), {}

        loss_mask = self.loss_evaluator(proposals, mask_logits, targets)
        return x, all_proposals, dict(loss_mask=loss_mask)


def build_roi_mask_head(cfg, in_channels):
    """The mask head of Mask R-CNN."""
    return ROIMaskHead(cfg, in_channels)
