"""Smooth L1 loss with upstream's signature (beta = 1/9 for the RPN, 1 for the box head)."""
import torch


def smooth_l1_loss(input, target, beta=1.0 / 9, size_average=True):
    """Huber-style loss: ``0.5 x^2 / beta`` where ``|x| < beta``, else ``|x| - 0.5 beta``.

    Args:
        input, target: tensors of the same shape (e.g. (R, 4) box deltas).
        beta: transition point; 0 gives plain L1.
        size_average: mean over elements if True, else sum.
    Returns:
        scalar tensor.
    """
    diff = torch.abs(input - target)
    if beta > 0:
        loss = torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)
    else:
        loss = diff
    return loss.mean() if size_average else loss.sum()
