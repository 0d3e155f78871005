"""CombinedROIHeads: runs the box head, then the mask head on its output."""
import torch

from .box_head.box_head import build_roi_box_head
from .mask_head.mask_head import build_roi_mask_head
from .mask_head.weight_transfer import build_bbox2mask


class CombinedROIHeads(torch.nn.ModuleDict):
    """The RoI heads of a model as a ModuleDict ("box", optionally "mask").

    With MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR (the C4 configs) the mask head uses
    the box head's feature extractor, and in training reuses the box head's RoI features.
    With MODEL.ROI_MASK_HEAD.USE_BBOX2MASK (LST) the entry "bbox2mask" holds the transfer
    function T, and the mask head's class filters are T(box.predictor.cls_score.weight), not
    detached, so the mask loss also trains the box classifier. Inside a predictor's
    ``replaced_class_weights`` context (LST's episodic training) T gets the same replaced rows
    the box classifier scores with.
    """

    def __init__(self, cfg, heads):
        super(CombinedROIHeads, self).__init__(heads)
        self.cfg = cfg.clone()
        if cfg.MODEL.MASK_ON and cfg.MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR:
            self.mask.feature_extractor = self.box.feature_extractor
        if cfg.MODEL.MASK_ON and cfg.MODEL.ROI_MASK_HEAD.USE_BBOX2MASK:
            classifier = getattr(self.box.predictor, "cls_score", None)
            box_dim = cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM
            if not isinstance(classifier, torch.nn.Linear) or classifier.in_features != box_dim:
                raise ValueError(
                    "MODEL.ROI_MASK_HEAD.USE_BBOX2MASK transfers the box predictor's "
                    "cls_score.weight, which must be a Linear on MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM "
                    "({}) features; use an FPN box head (e.g. FPN2MLPCosineFeatureExtractor with "
                    "FPNCosinePredictor)".format(box_dim)
                )
            self.bbox2mask = build_bbox2mask(cfg)

    def box_class_weights(self):
        """(NUM_CLASSES, D) box classifier rows in use: the predictor's ``class_weights()``
        (possibly with replaced rows, see FPNCosinePredictor.replaced_class_weights)."""
        return self.box.predictor.class_weights()

    def forward(self, features, proposals, targets=None):
        """
        Arguments:
            features (list[Tensor]): (N, C, H_l, W_l) feature maps.
            proposals (list[BoxList]): the RPN's proposals of each image.
            targets (list[BoxList], optional): ground truth; required in training.

        Returns:
            x (Tensor): the last head's RoI features.
            detections (list[BoxList]): at test time the detections ("scores", "labels" and,
                with masks, "mask"); in training the sampled proposals.
            losses (dict[str, Tensor]): "loss_classifier", "loss_box_reg" (+ "loss_mask") in
                training, empty at test time.
        """
        losses = {}
        x, detections, loss_box = self.box(features, proposals, targets)
        losses.update(loss_box)
        if self.cfg.MODEL.MASK_ON:
            mask_features = features
            # In training the shared extractor's output for the sampled RoIs is already known.
            if self.training and self.cfg.MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR:
                mask_features = x
            class_weights = None
            if self.cfg.MODEL.ROI_MASK_HEAD.USE_BBOX2MASK:
                class_weights = self.bbox2mask(self.box_class_weights())
            x, detections, loss_mask = self.mask(
                mask_features, detections, targets, class_weights=class_weights
            )
            losses.update(loss_mask)
        return x, detections, losses


def build_roi_heads(cfg, in_channels):
    """CombinedROIHeads for the config, or an empty list for an RPN-only model (MODEL.RPN_ONLY).

    Arguments:
        cfg: config (MODEL.RPN_ONLY, MODEL.MASK_ON, MODEL.KEYPOINT_ON, MODEL.RETINANET_ON).
        in_channels (int): channels of the backbone features.
    """
    if cfg.MODEL.RETINANET_ON:
        raise NotImplementedError(
            "RetinaNet is not supported in this fork (MODEL.RETINANET_ON is True); set "
            "MODEL.RETINANET_ON False to build a Faster / Mask R-CNN"
        )
    if cfg.MODEL.KEYPOINT_ON:
        raise NotImplementedError(
            "keypoint heads are not supported in this fork (MODEL.KEYPOINT_ON is True); set "
            "MODEL.KEYPOINT_ON False to build a Faster / Mask R-CNN"
        )
    if cfg.MODEL.RPN_ONLY and cfg.MODEL.MASK_ON:
        raise ValueError(
            "MODEL.MASK_ON needs the box head, which MODEL.RPN_ONLY removes; set one of them False"
        )
    roi_heads = []
    if not cfg.MODEL.RPN_ONLY:
        roi_heads.append(("box", build_roi_box_head(cfg, in_channels)))
    if cfg.MODEL.MASK_ON:
        roi_heads.append(("mask", build_roi_mask_head(cfg, in_channels)))
    if not roi_heads:
        return []
    return CombinedROIHeads(cfg, roi_heads)
