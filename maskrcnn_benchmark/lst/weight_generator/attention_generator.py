"""LST's meta weight generator (paper §3.4, Eq. 3; Gidaris & Komodakis's attention-based generator).

For the RoI features of one new class in one image, the generator writes a cosine-classifier row
from the features themselves and from an attention over the base classifier rows:

    x_i  = x_i / |x_i|                                   (n, d) support RoI features
    q_i  = V x_i / |V x_i|,  k_j = K_j / |K_j|           query per RoI, one key per base class
    m_i  = softmax_j(scale_att * <q_i, k_j>)             (n, b) attention over the b base classes
    w    = A(mean_i x_i) + B(mean_i W̄_B^T m_i)           (d,)   generated classifier row

with W̄_B the L2-normalised base classifier rows (b, d), and A, B the element-wise vectors a, b of
Eq. 3 (AFFINE "elementwise") or the authors' full Linear(d, d) layers with bias (AFFINE "full").
A and B are affine, so averaging before them equals averaging the per-RoI weights, as the paper
describes.
"""
import torch
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.modeling import registry

AFFINE_TYPES = ("elementwise", "full")

_IDENTITY_INIT_STD = 0.001  # identity + N(0, 0.001^2) for V and the full affine layers
_NORM_EPS = 1e-12  # as in FPNCosinePredictor


def _identity_linear(dim):
    """Linear(dim, dim) initialised to identity + N(0, 0.001^2), bias 0."""
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim) + _IDENTITY_INIT_STD * torch.randn(dim, dim))
        layer.bias.zero_()
    return layer


def _normalize_rows(x):
    return F.normalize(x, p=2, dim=1, eps=_NORM_EPS)


@registry.FEWSHOT_WEIGHT_GENERATOR.register("AttentionBasedGenerator")
class AttentionBasedGenerator(nn.Module):
    """Generates one classifier row (d,) per group of support RoIs (Eq. 3).

    Args:
        feat_dim (int): d, width of the box features (MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM).
        num_base_classes (int): b, number of base classes attended over (one key each).
        scale_att (float): initial value of the learnable attention temperature.
        affine (str): "elementwise" (paper: vectors ``avg_weight`` = a, ``att_weight`` = b, init
            ones) or "full" (authors' module: ``fc_avg``, ``fc_att`` = Linear(d, d), identity +
            N(0, 0.001^2) init, bias 0).

    Other parameters: ``query_layer`` V = Linear(d, d) (identity + N(0, 0.001^2), bias 0),
    ``keys`` K (b, d) ~ N(0, 2 / d), ``scale_att`` (1,).
    """

    def __init__(self, feat_dim, num_base_classes, scale_att=10.0, affine="elementwise"):
        super(AttentionBasedGenerator, self).__init__()
        if feat_dim < 1 or num_base_classes < 1:
            raise ValueError(
                "AttentionBasedGenerator needs feat_dim >= 1 and num_base_classes >= 1, got "
                "feat_dim={} and num_base_classes={}".format(feat_dim, num_base_classes)
            )
        if affine not in AFFINE_TYPES:
            raise ValueError(
                "MODEL.FEW_SHOT.AFFINE must be one of {}, got '{}'".format(AFFINE_TYPES, affine)
            )
        self.feat_dim = feat_dim
        self.num_base_classes = num_base_classes
        self.affine = affine

        self.query_layer = _identity_linear(feat_dim)
        self.keys = nn.Parameter(torch.randn(num_base_classes, feat_dim) * (2.0 / feat_dim) ** 0.5)
        self.scale_att = nn.Parameter(torch.tensor([float(scale_att)]))
        if affine == "elementwise":
            self.avg_weight = nn.Parameter(torch.ones(feat_dim))
            self.att_weight = nn.Parameter(torch.ones(feat_dim))
        else:
            self.fc_avg = _identity_linear(feat_dim)
            self.fc_att = _identity_linear(feat_dim)

    def attention(self, features):
        """Attention coefficients m over the base classes.

        Args:
            features (Tensor[n, d]): support RoI features (normalised here; raw features are fine).
        Returns:
            Tensor[n, b]: m_i = softmax_j(scale_att * <q_i, k_j>); each row sums to 1.
        """
        self._check_features(features)
        queries = _normalize_rows(self.query_layer(_normalize_rows(features)))
        keys = _normalize_rows(self.keys)
        return F.softmax(self.scale_att * queries.mm(keys.t()), dim=1)

    def forward(self, features, base_weights, groups):
        """Generated classifier rows, one per group of RoIs.

        Args:
            features (Tensor[n, d]): support RoI features (L2-normalised here).
            base_weights (Tensor[b, d]): the current base classifier rows (cls_score rows 1..b, no
                background), L2-normalised here; not detached, so gradient reaches them.
            groups (Tensor[n], int64): group id of each RoI in 0..G-1, e.g. one group per
                (image, class) pair; every id in 0..G-1 must occur (``torch.unique(keys,
                return_inverse=True)`` gives such ids).
        Returns:
            Tensor[G, d]: row g is the weight generated from the RoIs of group g.
        """
        self._check_inputs(features, base_weights, groups)
        num_groups = int(groups.max()) + 1
        counts = torch.bincount(groups, minlength=num_groups)
        if bool((counts == 0).any()):
            empty = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(
                "AttentionBasedGenerator: groups {} have no RoI; group ids must be 0..G-1 with "
                "every id used (relabel with torch.unique(ids, return_inverse=True))".format(empty)
            )

        attended = self.attention(features).mm(_normalize_rows(base_weights))  # (n, d)
        per_roi = torch.cat([_normalize_rows(features), attended], dim=1)  # (n, 2d)
        sums = per_roi.new_zeros(num_groups, 2 * self.feat_dim).index_add(0, groups, per_roi)
        means = sums / counts.to(per_roi.dtype).unsqueeze(1)
        feature_mean, attended_mean = means.split(self.feat_dim, dim=1)

        if self.affine == "elementwise":
            return self.avg_weight * feature_mean + self.att_weight * attended_mean
        return self.fc_avg(feature_mean) + self.fc_att(attended_mean)

    def _check_features(self, features):
        if features.dim() != 2 or features.shape[1] != self.feat_dim or features.shape[0] == 0:
            raise ValueError(
                "AttentionBasedGenerator expects support features of shape (n, {}) with n >= 1, "
                "got {}".format(self.feat_dim, tuple(features.shape))
            )

    def _check_inputs(self, features, base_weights, groups):
        self._check_features(features)
        expected = (self.num_base_classes, self.feat_dim)
        if tuple(base_weights.shape) != expected:
            raise ValueError(
                "AttentionBasedGenerator expects base_weights of shape {} (classifier rows 1..b, "
                "without background), got {}".format(expected, tuple(base_weights.shape))
            )
        if groups.dtype != torch.int64 or tuple(groups.shape) != (features.shape[0],):
            raise ValueError(
                "AttentionBasedGenerator expects groups as an int64 tensor of shape ({},), got "
                "{} of shape {}".format(features.shape[0], groups.dtype, tuple(groups.shape))
            )
        if bool((groups < 0).any()):
            raise ValueError("AttentionBasedGenerator: group ids must be >= 0")


def build_weight_generator(cfg, num_base_classes):
    """The generator named by MODEL.FEW_SHOT.GENERATOR_TYPE.

    feat_dim is MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM; scale_att and affine come from
    MODEL.FEW_SHOT.SCALE_ATT and MODEL.FEW_SHOT.AFFINE. Registered generators take these four
    arguments as keywords.
    """
    generator_class = registry.FEWSHOT_WEIGHT_GENERATOR[cfg.MODEL.FEW_SHOT.GENERATOR_TYPE]
    return generator_class(
        feat_dim=cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM,
        num_base_classes=num_base_classes,
        scale_att=cfg.MODEL.FEW_SHOT.SCALE_ATT,
        affine=cfg.MODEL.FEW_SHOT.AFFINE,
    )
