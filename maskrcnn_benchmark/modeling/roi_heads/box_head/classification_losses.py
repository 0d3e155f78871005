"""Classification losses of the box head and their matching score functions.

MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS picks one; docs/long_tail_losses.md gives the formulas.

* "softmax": softmax cross-entropy over NUM_CLASSES logits (upstream).
* "federated": sigmoid cross-entropy over the classes of the sampled RoIs plus negative classes
  drawn by training image count ** FED_LOSS_FREQ_WEIGHT_POWER (Zhou et al., "Probabilistic
  two-stage detection", 2021; detectron2's USE_FED_LOSS).
* "eqlv2": sigmoid cross-entropy re-weighted by each class's accumulated positive / negative
  gradient ratio (Tan et al., "Equalization Loss v2", CVPR 2021).
* "seesaw": softmax cross-entropy with mitigation and compensation factors on the foreground
  classes plus a foreground / background objectness branch (Wang et al., "Seesaw Loss for
  Long-Tailed Instance Segmentation", CVPR 2021).

Every loss takes the (R, num_classifier_outputs) logits of the sampled RoIs and their int64
labels (R,) (0 = background, 1..C-1 foreground; C = NUM_CLASSES) and returns a scalar averaged
over the R RoIs; ``scores(logits)`` gives the (R, C) probabilities that the post-processor
thresholds (column 0 = background). The running statistics of EQLv2 and Seesaw are buffers,
saved with the checkpoint, summed over the processes of a torch.distributed job.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from maskrcnn_benchmark.utils.comm import get_world_size

CLASSIFICATION_LOSSES = ("softmax", "federated", "eqlv2", "seesaw")


def _all_reduce_sum(tensor):
    """``tensor`` summed over the processes of the default group (itself in one process)."""
    if get_world_size() > 1:
        torch.distributed.all_reduce(tensor)
    return tensor


def num_classifier_outputs(cfg):
    """Width of the box classifier: NUM_CLASSES, plus one foreground-objectness logit (the
    last column; column 0 is the background-objectness logit) for "seesaw"."""
    num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    return num_classes + 1 if cfg.MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS == "seesaw" else num_classes


def classifier_bias_init(cfg):
    """The initial bias of every box classifier logit: -log((1 - p) / p) with p =
    MODEL.ROI_BOX_HEAD.PRIOR_PROB for "federated" (the sigmoid classifier of CenterNet2 / Detic),
    0 for the other losses (upstream's initialisation)."""
    head = cfg.MODEL.ROI_BOX_HEAD
    if head.CLASSIFICATION_LOSS != "federated":
        return 0.0
    if not 0.0 < head.PRIOR_PROB < 1.0:
        raise ValueError("MODEL.ROI_BOX_HEAD.PRIOR_PROB must be in (0, 1) (the federated classifier's initial "
                         "score; CenterNet2's 0.01), got {}".format(head.PRIOR_PROB))
    return -math.log((1.0 - head.PRIOR_PROB) / head.PRIOR_PROB)


class SoftmaxCrossEntropy(nn.Module):
    """Upstream's loss: cross-entropy of the softmax over the C logits; scores = softmax."""

    def forward(self, logits, labels):
        return F.cross_entropy(logits, labels)

    def scores(self, logits):
        return F.softmax(logits, -1)


class FederatedLoss(nn.Module):
    """Sigmoid cross-entropy over a subset S of the foreground classes, summed and divided by R.

    S holds the distinct labels of the batch's sampled RoIs and, while those are fewer than
    ``num_sampled_classes`` (the background label counting as one of them, as in detectron2 and
    CenterNet2), negative classes drawn without replacement with probability proportional to
    (training image count) ** ``freq_weight_power``. The background logit (column 0) is not
    trained; scores are sigmoid(logits) with column 0 set to 0.

    The buffer ``class_image_counts`` (C,) (index = training label; entry 0 unused) must be set
    with :meth:`set_class_image_counts` before training (tools/train_net.py does it from
    DATASETS.TRAIN).
    """

    def __init__(self, num_classes, num_sampled_classes=50, freq_weight_power=0.5):
        super(FederatedLoss, self).__init__()
        self.num_sampled_classes = num_sampled_classes
        self.freq_weight_power = freq_weight_power
        self.register_buffer("class_image_counts", torch.zeros(num_classes))

    def set_class_image_counts(self, counts):
        """counts: (C,) number of training images of each label (entry 0, background, ignored)."""
        counts = torch.as_tensor(counts, dtype=self.class_image_counts.dtype)
        if counts.shape != self.class_image_counts.shape:
            raise ValueError(
                "Federated loss: {} class image counts for MODEL.ROI_BOX_HEAD.NUM_CLASSES {}; the "
                "training set and NUM_CLASSES disagree".format(
                    counts.numel(), self.class_image_counts.numel())
            )
        self.class_image_counts.copy_(counts)

    def sample_classes(self, labels):
        """(K,) int64: the distinct labels of ``labels`` (background included), then the sampled
        negative classes, K <= num_sampled_classes unless the batch alone has more labels."""
        present = torch.unique(labels)
        weights = self.class_image_counts.to(labels.device).float() ** self.freq_weight_power
        weights[0] = 0
        weights[self.class_image_counts.to(labels.device) == 0] = 0
        weights[present] = 0
        available = int((weights > 0).sum())
        num_negatives = min(self.num_sampled_classes - present.numel(), available)
        if num_negatives <= 0:
            return present
        return torch.cat([present, torch.multinomial(weights, num_negatives, replacement=False)])

    def forward(self, logits, labels):
        if not bool((self.class_image_counts[1:] > 0).any()):
            raise RuntimeError(
                "MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS 'federated' needs the training image count of "
                "every class: call set_class_image_counts (tools/train_net.py does it from DATASETS.TRAIN)"
            )
        logits = logits.float()
        num_rois, num_classes = logits.shape
        targets = F.one_hot(labels, num_classes).to(logits.dtype)
        mask = logits.new_zeros(num_classes)
        mask[self.sample_classes(labels)] = 1
        mask[0] = 0
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return (loss * mask).sum() / num_rois

    def scores(self, logits):
        probabilities = torch.sigmoid(logits)
        probabilities[:, 0] = 0
        return probabilities


class EQLv2Loss(nn.Module):
    """Equalization loss v2: per-element weighted sigmoid cross-entropy, summed, divided by R.

    For foreground class j with accumulated positive / negative gradient ratio
    g_j = pos_grad_j / (neg_grad_j + 1e-10), the negative weight is r_j = sigmoid(gamma (g_j - mu))
    and the positive weight q_j = 1 + alpha (1 - r_j); before the first update every weight is 1.
    Column 0 is a category-agnostic (background) sigmoid task with weights 1 and no statistics.
    After each loss the weighted gradient magnitudes |d BCE / d z| * weight of the batch are added
    to the buffers ``pos_grad`` / ``neg_grad`` (C - 1,) (summed over processes), and
    ``num_updates`` counts the updates. Scores: p_j = sigmoid(z_j) (1 - sigmoid(z_0)) for j >= 1,
    p_0 = sigmoid(z_0), as in the authors' code.
    """

    def __init__(self, num_classes, gamma=12.0, mu=0.8, alpha=4.0):
        super(EQLv2Loss, self).__init__()
        self.gamma = gamma
        self.mu = mu
        self.alpha = alpha
        self.register_buffer("pos_grad", torch.zeros(num_classes - 1, dtype=torch.float64))
        self.register_buffer("neg_grad", torch.zeros(num_classes - 1, dtype=torch.float64))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    def class_weights(self):
        """(pos_weight, neg_weight), each (C,) float32, column 0 (background) = 1."""
        ones = torch.ones(1, dtype=torch.float32, device=self.pos_grad.device)
        if int(self.num_updates) == 0:
            return ones.expand(self.pos_grad.numel() + 1), ones.expand(self.pos_grad.numel() + 1)
        ratio = self.pos_grad / (self.neg_grad + 1e-10)
        neg_weight = torch.sigmoid(self.gamma * (ratio - self.mu)).float()
        pos_weight = 1 + self.alpha * (1 - neg_weight)
        return torch.cat([ones, pos_weight]), torch.cat([ones, neg_weight])

    def forward(self, logits, labels):
        logits = logits.float()
        num_rois, num_classes = logits.shape
        targets = F.one_hot(labels, num_classes).to(logits.dtype)
        pos_weight, neg_weight = self.class_weights()
        weights = targets * pos_weight + (1 - targets) * neg_weight
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        self.update(logits.detach(), targets, weights)
        return (loss * weights).sum() / num_rois

    @torch.no_grad()
    def update(self, logits, targets, weights):
        """Add the batch's weighted |d BCE / d z| of the foreground columns to the statistics."""
        gradient = (torch.sigmoid(logits) - targets).abs() * weights
        pos = (gradient * targets).sum(0)[1:].double()
        neg = (gradient * (1 - targets)).sum(0)[1:].double()
        statistics = _all_reduce_sum(torch.stack([pos, neg]))
        self.pos_grad += statistics[0]
        self.neg_grad += statistics[1]
        self.num_updates += 1

    def scores(self, logits):
        probabilities = torch.sigmoid(logits)
        foreground = probabilities[:, 1:] * (1 - probabilities[:, :1])
        return torch.cat([probabilities[:, :1], foreground], dim=1)


class SeesawLoss(nn.Module):
    """Seesaw loss with its objectness branch; logits (R, C + 1).

    Columns 1..C-1 are the foreground class logits z, columns (0, C) the (background,
    foreground) objectness logits. Loss = CE(objectness, label > 0) averaged over the R RoIs
    + sum over the foreground RoIs of the seesaw cross-entropy of their class, divided by R:
    for a RoI of class i, -log(e^{z_i} / (e^{z_i} + sum_{j != i} S_ij e^{z_j})) with
    S_ij = M_ij C_ij, M_ij = (N_j / N_i) ** p if N_j < N_i else 1 (mitigation) and
    C_ij = (s_j / s_i) ** q if s_j > s_i else 1 (compensation), s = softmax(z) (no gradient),
    s_i clamped at ``eps``, N the buffer ``cum_samples`` (C,) of sampled-RoI label counts
    (background at 0, unused by M; counts clamped at 1), updated before the loss with the
    batch's labels, summed over processes. Scores: objectness softmax (p_bg, p_fg);
    p_0 = p_bg, p_j = p_fg softmax(z)_j.
    """

    def __init__(self, num_classes, p=0.8, q=2.0, eps=1e-2):
        super(SeesawLoss, self).__init__()
        self.p = p
        self.q = q
        self.eps = eps
        self.register_buffer("cum_samples", torch.zeros(num_classes, dtype=torch.float64))

    @staticmethod
    def _split(logits):
        """(class logits (R, C - 1), objectness logits (R, 2) = (background, foreground))."""
        return logits[:, 1:-1], logits[:, [0, -1]]

    def seesaw_factors(self, class_logits, labels):
        """(R, C - 1) S_ij of each foreground RoI (row) and class j; ``labels`` in 0..C-2."""
        counts = self.cum_samples[1:].clamp(min=1).to(class_logits.device)
        ratio = (counts[None, :] / counts[:, None]).float()  # [i, j] = N_j / N_i
        mitigation = torch.where(ratio < 1, ratio ** self.p, torch.ones_like(ratio))[labels]
        scores = F.softmax(class_logits.detach(), dim=1)
        own = scores.gather(1, labels[:, None]).clamp(min=self.eps)
        score_ratio = scores / own
        compensation = torch.where(score_ratio > 1, score_ratio ** self.q, torch.ones_like(score_ratio))
        return mitigation * compensation

    def forward(self, logits, labels):
        logits = logits.float()
        num_rois, width = logits.shape
        counts = torch.bincount(labels, minlength=width - 1).double()
        self.cum_samples += _all_reduce_sum(counts.to(self.cum_samples.device))

        class_logits, objectness_logits = self._split(logits)
        foreground = labels > 0
        objectness_loss = F.cross_entropy(objectness_logits, foreground.long())

        class_logits = class_logits[foreground]
        class_labels = labels[foreground] - 1
        factors = self.seesaw_factors(class_logits, class_labels)
        onehot = F.one_hot(class_labels, class_logits.shape[1]).to(class_logits.dtype)
        adjusted = class_logits + factors.log() * (1 - onehot)
        class_loss = F.cross_entropy(adjusted, class_labels, reduction="sum") / num_rois
        return objectness_loss + class_loss

    def scores(self, logits):
        class_logits, objectness_logits = self._split(logits)
        objectness = F.softmax(objectness_logits, dim=1)
        foreground = F.softmax(class_logits, dim=1) * objectness[:, 1:]
        return torch.cat([objectness[:, :1], foreground], dim=1)


def make_classification_loss(cfg):
    """The loss named by MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS, with its hyper-parameters."""
    head = cfg.MODEL.ROI_BOX_HEAD
    name = head.CLASSIFICATION_LOSS
    if name not in CLASSIFICATION_LOSSES:
        raise ValueError(
            "MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS is '{}'; use one of {}".format(
                name, ", ".join(CLASSIFICATION_LOSSES))
        )
    if name != "softmax" and (cfg.MODEL.LST.DISTILL.ENABLED or cfg.MODEL.FEW_SHOT.ENABLED):
        raise ValueError(
            "MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS '{}' with MODEL.LST.DISTILL.ENABLED or "
            "MODEL.FEW_SHOT.ENABLED: LST's distillation and meta weight generator work on softmax "
            "logits; set CLASSIFICATION_LOSS to 'softmax'".format(name)
        )
    if name == "seesaw" and cfg.MODEL.MASK_ON and cfg.MODEL.ROI_MASK_HEAD.USE_BBOX2MASK:
        raise ValueError(
            "MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS 'seesaw' adds an objectness row to the box "
            "classifier, which MODEL.ROI_MASK_HEAD.USE_BBOX2MASK cannot transfer to the mask head; "
            "set USE_BBOX2MASK to False"
        )
    if name == "federated":
        return FederatedLoss(head.NUM_CLASSES, head.FED_LOSS_NUM_CLASSES, head.FED_LOSS_FREQ_WEIGHT_POWER)
    if name == "eqlv2":
        return EQLv2Loss(head.NUM_CLASSES, head.EQLV2_GAMMA, head.EQLV2_MU, head.EQLV2_ALPHA)
    if name == "seesaw":
        return SeesawLoss(head.NUM_CLASSES, head.SEESAW_P, head.SEESAW_Q, head.SEESAW_EPS)
    return SoftmaxCrossEntropy()
