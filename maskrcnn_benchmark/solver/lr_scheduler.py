"""Learning-rate schedule of maskrcnn-benchmark: warmup, then step decay at fixed iterations."""
from bisect import bisect_right

import torch

WARMUP_METHODS = ("constant", "linear")


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Multiply each group's base LR by ``warmup(it) * gamma ** (number of milestones <= it)``.

    Stepped once per training iteration, so ``last_epoch`` counts iterations. While
    ``last_epoch < warmup_iters`` the warmup factor is ``warmup_factor`` ("constant") or rises
    linearly from ``warmup_factor`` at iteration 0 towards 1 ("linear"); afterwards it is 1.

    Args:
        optimizer (torch.optim.Optimizer)
        milestones (sequence of int): iterations at which the LR is multiplied by ``gamma``, sorted.
        gamma (float)
        warmup_factor (float): LR multiplier at iteration 0.
        warmup_iters (int): length of the warmup in iterations.
        warmup_method (str): "constant" or "linear".
        last_epoch (int): index of the last iteration done (-1: starting fresh).
    """

    def __init__(self, optimizer, milestones, gamma=0.1, warmup_factor=1.0 / 3, warmup_iters=500,
                 warmup_method="linear", last_epoch=-1):
        milestones = list(milestones)
        if milestones != sorted(milestones):
            raise ValueError(
                f"Milestones should be a list of increasing integers, got {milestones}; sort "
                f"SOLVER.STEPS in ascending order"
            )
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(
                f"Only 'constant' or 'linear' warmup_method accepted, got '{warmup_method}' "
                f"(SOLVER.WARMUP_METHOD)"
            )
        self.milestones = milestones
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def _warmup_multiplier(self):
        if self.last_epoch >= self.warmup_iters:
            return 1.0
        if self.warmup_method == "constant":
            return self.warmup_factor
        alpha = self.last_epoch / self.warmup_iters
        return self.warmup_factor * (1 - alpha) + alpha

    def get_lr(self):
        multiplier = self._warmup_multiplier() * self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * multiplier for base_lr in self.base_lrs]
