"""Box predictors, registered in ``registry.ROI_BOX_PREDICTOR``: class logits and box deltas.

All return ``(class_logits (R, W), box_regression (R, 4 * K))`` with K = NUM_CLASSES,
or K = 2 (background, foreground) when MODEL.CLS_AGNOSTIC_BBOX_REG. W = NUM_CLASSES, or
NUM_CLASSES + 1 with MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS "seesaw" (a foreground-objectness
logit last; see classification_losses.num_classifier_outputs). Initialisation: cls_score
N(0, 0.01), bbox_pred N(0, 0.001), zero biases (the federated loss's classifier biases:
classification_losses.classifier_bias_init).
"""
import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.modeling import registry

from .classification_losses import classifier_bias_init, num_classifier_outputs


def _make_linear_predictors(cfg, in_channels):
    num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    num_bbox_reg_classes = 2 if cfg.MODEL.CLS_AGNOSTIC_BBOX_REG else num_classes
    cls_score = nn.Linear(in_channels, num_classifier_outputs(cfg))
    bbox_pred = nn.Linear(in_channels, num_bbox_reg_classes * 4)
    nn.init.normal_(cls_score.weight, mean=0, std=0.01)
    nn.init.normal_(bbox_pred.weight, mean=0, std=0.001)
    nn.init.constant_(cls_score.bias, classifier_bias_init(cfg))
    nn.init.constant_(bbox_pred.bias, 0)
    return cls_score, bbox_pred


def _flatten_vector_features(x, predictor_name):
    """(R, C) or (R, C, 1, 1) features as (R, C); spatial features are an error."""
    if x.dim() == 4:
        if tuple(x.shape[2:]) != (1, 1):
            raise ValueError(
                "{} expects (R, C) or (R, C, 1, 1) features, got shape {}; use "
                "FastRCNNPredictor for spatial features".format(predictor_name, tuple(x.shape))
            )
        x = x.flatten(start_dim=1)
    return x


@registry.ROI_BOX_PREDICTOR.register("FastRCNNPredictor")
class FastRCNNPredictor(nn.Module):
    """C4 predictor: global average pooling of (R, C, h, w) features, then two linear layers."""

    def __init__(self, config, in_channels):
        super(FastRCNNPredictor, self).__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.cls_score, self.bbox_pred = _make_linear_predictors(config, in_channels)

    def forward(self, x):
        x = self.avgpool(x).flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def class_weights(self):
        """(W, C) classifier rows: cls_score.weight."""
        return self.cls_score.weight


@registry.ROI_BOX_PREDICTOR.register("FPNPredictor")
class FPNPredictor(nn.Module):
    """FPN predictor: two linear layers on (R, C) features (or (R, C, 1, 1))."""

    def __init__(self, cfg, in_channels):
        super(FPNPredictor, self).__init__()
        self.cls_score, self.bbox_pred = _make_linear_predictors(cfg, in_channels)

    def forward(self, x):
        x = _flatten_vector_features(x, "FPNPredictor")
        return self.cls_score(x), self.bbox_pred(x)

    def class_weights(self):
        """(W, C) classifier rows: cls_score.weight."""
        return self.cls_score.weight


@registry.ROI_BOX_PREDICTOR.register("FPNCosinePredictor")
class FPNCosinePredictor(nn.Module):
    """LST's scaled cosine classifier (paper §3.2) with an ordinary box regressor.

    class_logits[r, j] = s * <x_r / |x_r|, w_j / |w_j|>  (eps 1e-12), with cls_score a bias-free
    Linear whose rows w_j (background row 0 included) are only used through their direction.
    box_regression = bbox_pred(ReLU(x)): the regressor sees rectified features, as after
    FPN2MLPFeatureExtractor's fc7 + ReLU. s ("scale_cls", shape (1,)) starts at
    MODEL.ROI_BOX_HEAD.COSINE_SCALE and is a parameter when COSINE_SCALE_LEARNABLE, a buffer
    otherwise; either way it is saved under the key "scale_cls".
    Input: (R, C) or (R, C, 1, 1) features, e.g. from FPN2MLPCosineFeatureExtractor.

    LST's episodic training (meta weight generator, paper §3.4) scores with some classifier rows
    replaced by generated ones: inside ``with predictor.replaced_class_weights(labels, rows):``
    :meth:`class_weights` (used by ``forward`` and by the Mask^X transfer in CombinedROIHeads)
    returns cls_score.weight with those rows replaced, differentiably in both. Outside the
    context it is cls_score.weight itself.
    """

    def __init__(self, cfg, in_channels):
        super(FPNCosinePredictor, self).__init__()
        num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
        num_bbox_reg_classes = 2 if cfg.MODEL.CLS_AGNOSTIC_BBOX_REG else num_classes
        self.cls_score = nn.Linear(in_channels, num_classifier_outputs(cfg), bias=False)
        self.bbox_pred = nn.Linear(in_channels, num_bbox_reg_classes * 4)
        nn.init.normal_(self.cls_score.weight, mean=0, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, mean=0, std=0.001)
        nn.init.constant_(self.bbox_pred.bias, 0)

        scale = torch.tensor([float(cfg.MODEL.ROI_BOX_HEAD.COSINE_SCALE)])
        if cfg.MODEL.ROI_BOX_HEAD.COSINE_SCALE_LEARNABLE:
            self.scale_cls = nn.Parameter(scale)
        else:
            self.register_buffer("scale_cls", scale)
        self._replacement = None  # (labels (K,) int64, rows (K, C)) inside replaced_class_weights

    @contextlib.contextmanager
    def replaced_class_weights(self, labels, rows):
        """Context in which classifier rows ``labels`` are ``rows`` (see :meth:`class_weights`).

        Arguments:
            labels (Tensor[K], int64): distinct class labels in 0..NUM_CLASSES-1.
            rows (Tensor[K, C]): their replacement rows (e.g. generated, with gradient).
        """
        num_classes, in_channels = self.cls_score.weight.shape
        labels = torch.as_tensor(labels, dtype=torch.int64, device=self.cls_score.weight.device)
        if labels.dim() != 1 or tuple(rows.shape) != (labels.numel(), in_channels):
            raise ValueError(
                "replaced_class_weights expects labels (K,) and rows (K, {}), got {} and {}".format(
                    in_channels, tuple(labels.shape), tuple(rows.shape)
                )
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                "replaced_class_weights: labels {} outside 0..{}".format(labels.tolist(), num_classes - 1)
            )
        if labels.unique().numel() != labels.numel():
            raise ValueError("replaced_class_weights: labels {} repeat a class".format(labels.tolist()))
        previous = self._replacement
        self._replacement = (labels, rows)
        try:
            yield self
        finally:
            self._replacement = previous

    def class_weights(self):
        """(W, C) classifier rows in use: cls_score.weight, with the rows of the
        innermost :meth:`replaced_class_weights` context replaced (no gradient reaches the
        replaced rows of cls_score.weight)."""
        weight = self.cls_score.weight
        if self._replacement is None:
            return weight
        labels, rows = self._replacement
        return weight.index_put((labels,), rows.to(weight.dtype))

    def forward(self, x):
        x = _flatten_vector_features(x, "FPNCosinePredictor")
        box_regression = self.bbox_pred(F.relu(x))
        x_normalized = F.normalize(x, p=2, dim=1, eps=1e-12)
        weight_normalized = F.normalize(self.class_weights(), p=2, dim=1, eps=1e-12)
        class_logits = self.scale_cls * F.linear(x_normalized, weight_normalized)
        return class_logits, box_regression


def make_roi_box_predictor(cfg, in_channels):
    """The predictor named by MODEL.ROI_BOX_HEAD.PREDICTOR."""
    return registry.ROI_BOX_PREDICTOR[cfg.MODEL.ROI_BOX_HEAD.PREDICTOR](cfg, in_channels)
