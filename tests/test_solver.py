"""make_optimizer parameter groups and WarmupMultiStepLR against upstream's formula and torch's own schedulers."""
from bisect import bisect_right

import pytest
import torch
from torch import nn

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.solver import WarmupMultiStepLR, make_lr_scheduler, make_optimizer


def upstream_lr(base_lr, iteration, steps, gamma, warmup_factor, warmup_iters, method):
    """maskrcnn-benchmark's WarmupMultiStepLR schedule, written out independently."""
    factor = 1.0
    if iteration < warmup_iters:
        if method == "constant":
            factor = warmup_factor
        else:
            alpha = iteration / warmup_iters
            factor = warmup_factor * (1 - alpha) + alpha
    return base_lr * factor * gamma ** bisect_right(steps, iteration)


def lrs_over(scheduler, optimizer, num_iters):
    """LR of group 0 used at iterations 0 .. num_iters-1 (the scheduler steps after each one)."""
    lrs = []
    for _ in range(num_iters):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def sgd(lr=0.02):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


@pytest.mark.parametrize("method", ["linear", "constant"])
def test_schedule_matches_upstream_formula(method):
    steps, gamma, factor, warmup = (6, 11), 0.1, 1.0 / 3, 4
    optimizer = sgd(0.02)
    scheduler = WarmupMultiStepLR(optimizer, steps, gamma, factor, warmup, method)
    lrs = lrs_over(scheduler, optimizer, 15)
    expected = [upstream_lr(0.02, it, steps, gamma, factor, warmup, method) for it in range(15)]
    assert lrs == pytest.approx(expected, rel=1e-12)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_schedule_golden_values():
    # BASE_LR 0.02, warmup 1/3 over 500 iterations, steps (60000, 80000): the Mask R-CNN 1x recipe.
    optimizer = sgd(0.02)
    scheduler = WarmupMultiStepLR(optimizer, (60000, 80000), 0.1, 1.0 / 3, 500, "linear")
    seen = {}
    for it in range(80001):
        if it in (0, 250, 499, 500, 59999, 60000, 79999, 80000):
            seen[it] = optimizer.param_groups[0]["lr"]
        scheduler.step()
    assert seen[0] == pytest.approx(0.02 / 3)
    assert seen[250] == pytest.approx(0.02 * (1 / 3 * 0.5 + 0.5))
    assert seen[499] == pytest.approx(0.02 * (1 / 3 * (1 / 500) + 499 / 500))
    assert seen[500] == pytest.approx(0.02)
    assert seen[59999] == pytest.approx(0.02)
    assert seen[60000] == pytest.approx(0.002)
    assert seen[79999] == pytest.approx(0.002)
    assert seen[80000] == pytest.approx(0.0002)


@pytest.mark.parametrize("method", ["linear", "constant"])
def test_schedule_matches_torch_chained_schedulers(method):
    """Upstream's schedule equals torch's LinearLR/ConstantLR warmup chained with MultiStepLR."""
    steps, gamma, factor, warmup = [3, 7], 0.5, 0.25, 5
    ours_opt, ref_opt = sgd(0.1), sgd(0.1)
    ours = WarmupMultiStepLR(ours_opt, steps, gamma, factor, warmup, method)
    if method == "linear":
        warm = torch.optim.lr_scheduler.LinearLR(ref_opt, start_factor=factor, end_factor=1.0, total_iters=warmup)
    else:
        warm = torch.optim.lr_scheduler.ConstantLR(ref_opt, factor=factor, total_iters=warmup)
    ref = torch.optim.lr_scheduler.ChainedScheduler(
        [warm, torch.optim.lr_scheduler.MultiStepLR(ref_opt, steps, gamma)]
    )
    assert lrs_over(ours, ours_opt, 12) == pytest.approx(lrs_over(ref, ref_opt, 12), rel=1e-9)


def test_scheduler_resumes_from_state_dict():
    steps = (3, 6)
    optimizer = sgd()
    scheduler = WarmupMultiStepLR(optimizer, steps, 0.1, 1 / 3, 4, "linear")
    lrs_over(scheduler, optimizer, 5)
    state = scheduler.state_dict()
    remaining = lrs_over(scheduler, optimizer, 4)

    resumed_opt = sgd()
    resumed = WarmupMultiStepLR(resumed_opt, steps, 0.1, 1 / 3, 4, "linear")
    resumed.load_state_dict(state)
    resumed_opt.param_groups[0]["lr"] = resumed.get_last_lr()[0]
    assert lrs_over(resumed, resumed_opt, 4) == pytest.approx(remaining)


def test_unsorted_milestones_are_rejected():
    with pytest.raises(ValueError, match="increasing"):
        WarmupMultiStepLR(sgd(), (80000, 60000))


def test_unknown_warmup_method_is_rejected():
    with pytest.raises(ValueError, match="warmup_method"):
        WarmupMultiStepLR(sgd(), (10,), warmup_method="cosine")


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(2, 2)
        self.head = nn.Linear(2, 3)
        self.scale = nn.Parameter(torch.ones(3))
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def solver_cfg(**solver):
    cfg = default_cfg.clone()
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def test_optimizer_groups_bias_lr_and_weight_decay():
    cfg = solver_cfg(BASE_LR=0.01, BIAS_LR_FACTOR=2.0, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_BIAS=0.0, MOMENTUM=0.9)
    model = TinyModel()
    optimizer = make_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD)
    groups = {id(g["params"][0]): g for g in optimizer.param_groups}
    assert all(len(g["params"]) == 1 for g in optimizer.param_groups)
    assert set(groups) == {id(model.head.weight), id(model.head.bias), id(model.scale)}
    assert groups[id(model.head.bias)]["lr"] == pytest.approx(0.02)
    assert groups[id(model.head.bias)]["weight_decay"] == 0.0
    for weight in (model.head.weight, model.scale):
        assert groups[id(weight)]["lr"] == pytest.approx(0.01)
        assert groups[id(weight)]["weight_decay"] == pytest.approx(1e-4)
    assert all(g["momentum"] == 0.9 and not g["nesterov"] for g in optimizer.param_groups)


def test_frozen_parameters_are_not_updated():
    cfg = solver_cfg(BASE_LR=0.1)
    model = TinyModel()
    frozen_before = model.frozen.weight.detach().clone()
    optimizer = make_optimizer(cfg, model)
    model.head(model.frozen(torch.ones(1, 2))).sum().backward()
    optimizer.step()
    assert torch.equal(model.frozen.weight, frozen_before)


def test_all_frozen_model_is_a_clear_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer(default_cfg, model)


def test_make_lr_scheduler_follows_config():
    cfg = solver_cfg(BASE_LR=0.1, STEPS=(2, 4), GAMMA=0.5, WARMUP_FACTOR=0.1, WARMUP_ITERS=2,
                     WARMUP_METHOD="constant")
    optimizer = make_optimizer(cfg, nn.Linear(1, 1, bias=False))
    scheduler = make_lr_scheduler(cfg, optimizer)
    expected = [upstream_lr(0.1, it, (2, 4), 0.5, 0.1, 2, "constant") for it in range(6)]
    assert lrs_over(scheduler, optimizer, 6) == pytest.approx(expected)
