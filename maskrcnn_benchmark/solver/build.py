"""Optimizer and LR scheduler built from the SOLVER config group."""
import torch

from .lr_scheduler import WarmupMultiStepLR


def make_optimizer(cfg, model):
    """SGD with momentum and one parameter group per trainable parameter.

    Biases (parameters whose name contains "bias") train at ``BASE_LR * BIAS_LR_FACTOR`` with
    ``WEIGHT_DECAY_BIAS``; all others at ``BASE_LR`` with ``WEIGHT_DECAY``. Parameters with
    ``requires_grad=False`` (frozen stages, FrozenBN) are left out.
    """
    solver = cfg.SOLVER
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "bias" in name:
            lr, weight_decay = solver.BASE_LR * solver.BIAS_LR_FACTOR, solver.WEIGHT_DECAY_BIAS
        else:
            lr, weight_decay = solver.BASE_LR, solver.WEIGHT_DECAY
        groups.append({"params": [param], "lr": lr, "weight_decay": weight_decay})
    if not groups:
        raise ValueError(
            "make_optimizer: the model has no trainable parameters (every requires_grad is False); "
            "check MODEL.BACKBONE.FREEZE_CONV_BODY_AT and any freezing options"
        )
    return torch.optim.SGD(groups, lr=solver.BASE_LR, momentum=solver.MOMENTUM)


def make_lr_scheduler(cfg, optimizer):
    """WarmupMultiStepLR over SOLVER.STEPS, GAMMA and the WARMUP_* keys (stepped per iteration)."""
    solver = cfg.SOLVER
    return WarmupMultiStepLR(
        optimizer,
        solver.STEPS,
        solver.GAMMA,
        warmup_factor=solver.WARMUP_FACTOR,
        warmup_iters=solver.WARMUP_ITERS,
        warmup_method=solver.WARMUP_METHOD,
    )
