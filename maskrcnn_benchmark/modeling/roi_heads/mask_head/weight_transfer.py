"""LST's Mask^X R-CNN weight transfer T: box-classifier weights -> per-class mask weights.

T maps each row w_j (MLP_HEAD_DIM,) of the box predictor's ``cls_score.weight`` to a mask
weight vector (CONV_LAYERS[-1],) used as a 1x1 conv filter by MaskXRCNNC4Predictor (paper §3.2,
following Hu et al.'s Mask^X R-CNN with the "cls" embedding only).
"""
from torch import nn


def build_bbox2mask(cfg):
    """T = Linear(D, D) -> LeakyReLU -> Linear(D, M) -> LeakyReLU as an nn.Sequential.

    D = MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM (the classifier's input width), M =
    MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1] (the mask predictor's deconv width). LeakyReLU slope
    0.01 and PyTorch's default Linear initialisation, as in the authors' code; as the module
    "roi_heads.bbox2mask" its state-dict keys are "bbox2mask.0.*" and "bbox2mask.2.*".
    Input (C, D) -> output (C, M).
    """
    box_dim = cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM
    mask_dim = cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1]
    return nn.Sequential(
        nn.Linear(box_dim, box_dim),
        nn.LeakyReLU(),
        nn.Linear(box_dim, mask_dim),
        nn.LeakyReLU(),
    )
