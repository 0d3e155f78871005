"""Box predictors, registered in ``registry.ROI_BOX_PREDICTOR``: class logits and box deltas.

Both return ``(class_logits (R, NUM_CLASSES), box_regression (R, 4 * K))`` with K = NUM_CLASSES,
or K = 2 (background, foreground) when MODEL.CLS_AGNOSTIC_BBOX_REG. Initialisation: cls_score
N(0, 0.01), bbox_pred N(0, 0.001), zero biases.
"""
from torch import nn

from maskrcnn_benchmark.modeling import registry


def _make_linear_predictors(cfg, in_channels):
    num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    num_bbox_reg_classes = 2 if cfg.MODEL.CLS_AGNOSTIC_BBOX_REG else num_classes
    cls_score = nn.Linear(in_channels, num_classes)
    bbox_pred = nn.Linear(in_channels, num_bbox_reg_classes * 4)
    nn.init.normal_(cls_score.weight, mean=0, std=0.01)
    nn.init.normal_(bbox_pred.weight, mean=0, std=0.001)
    for layer in (cls_score, bbox_pred):
        nn.init.constant_(layer.bias, 0)
    return cls_score, bbox_pred


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


@registry.ROI_BOX_PREDICTOR.register("FPNPredictor")
class FPNPredictor(nn.Module):
    """FPN predictor: two linear layers on (R, C) features (or (R, C, 1, 1))."""

    def __init__(self, cfg, in_channels):
        super(FPNPredictor, self).__init__()
        self.cls_score, self.bbox_pred = _make_linear_predictors(cfg, in_channels)

    def forward(self, x):
        if x.dim() == 4:
            if tuple(x.shape[2:]) != (1, 1):
                raise ValueError(
                    "FPNPredictor expects (R, C) or (R, C, 1, 1) features, got shape {}; use "
                    "FastRCNNPredictor for spatial features".format(tuple(x.shape))
                )
            x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


def make_roi_box_predictor(cfg, in_channels):
    """The predictor named by MODEL.ROI_BOX_HEAD.PREDICTOR."""
    return registry.ROI_BOX_PREDICTOR[cfg.MODEL.ROI_BOX_HEAD.PREDICTOR](cfg, in_channels)
