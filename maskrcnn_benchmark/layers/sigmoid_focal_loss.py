"""Sigmoid focal loss (RetinaNet) with upstream's integer labels, backed by ``_C``."""
from torch import nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from maskrcnn_benchmark.layers._C_loader import _C, float32_under_autocast


class _SigmoidFocalLoss(Function):
    """logits (N, C), targets (N,) int -> element-wise loss (N, C).

    targets: 0 = background, c in 1..C = the class of logit column c - 1, negative = ignored (zero loss).
    Positives are weighted by ``alpha``, negatives by ``1 - alpha``; ``gamma`` is the focusing exponent.
    """

    @staticmethod
    def forward(ctx, logits, targets, gamma, alpha):
        ctx.save_for_backward(logits, targets)
        ctx.gamma = gamma
        ctx.alpha = alpha
        return _C.sigmoid_focalloss_forward(logits, targets, logits.shape[1], gamma, alpha)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_loss):
        logits, targets = ctx.saved_tensors
        d_logits = _C.sigmoid_focalloss_backward(logits, targets, d_loss, logits.shape[1], ctx.gamma, ctx.alpha)
        return d_logits, None, None, None


def sigmoid_focal_loss(logits, targets, gamma, alpha):
    """Differentiable element-wise focal loss, see :class:`_SigmoidFocalLoss`; runs in float32 under autocast."""
    (logits,) = float32_under_autocast(logits)
    return _SigmoidFocalLoss.apply(logits, targets, gamma, alpha)


class SigmoidFocalLoss(nn.Module):
    """``forward(logits, targets)`` returns the summed focal loss (a scalar), as upstream."""

    def __init__(self, gamma, alpha):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits, targets):
        return sigmoid_focal_loss(logits, targets, self.gamma, self.alpha).sum()

    def __repr__(self):
        return f"{self.__class__.__name__}(gamma={self.gamma}, alpha={self.alpha})"
