"""SigmoidFocalLoss (maskrcnn_benchmark._C) against torchvision.ops.sigmoid_focal_loss on one-hot targets."""
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from maskrcnn_benchmark.layers import SigmoidFocalLoss
from maskrcnn_benchmark.layers.sigmoid_focal_loss import sigmoid_focal_loss


def reference_loss(logits, targets, gamma, alpha):
    """Element-wise loss with upstream's labels: 0 background, c -> column c - 1, negative rows ignored."""
    num_classes = logits.shape[1]
    classes = torch.arange(1, num_classes + 1)
    one_hot = (targets[:, None] == classes).to(logits.dtype)
    counted = (targets >= 0)[:, None].to(logits.dtype)
    return tv_sigmoid_focal_loss(logits, one_hot, alpha=alpha, gamma=gamma, reduction="none") * counted


def make_case(dtype, num_rows=64, num_classes=7, scale=4.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, num_classes, dtype=dtype, generator=generator) * scale
    targets = torch.randint(-1, num_classes + 1, (num_rows,), generator=generator, dtype=torch.int32)
    return logits, targets


TOLERANCE = {torch.float32: dict(atol=1e-6, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-10)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.0, 0.5), (1.5, 0.75)])
def test_elementwise_loss_and_gradient_match_reference(dtype, gamma, alpha):
    logits, targets = make_case(dtype)
    assert (targets == -1).any() and (targets == 0).any()
    ours_logits = logits.clone().requires_grad_()
    ref_logits = logits.clone().requires_grad_()

    ours = sigmoid_focal_loss(ours_logits, targets, gamma, alpha)
    ref = reference_loss(ref_logits, targets, gamma, alpha)
    torch.testing.assert_close(ours, ref, **TOLERANCE[dtype])
    assert torch.count_nonzero(ours[targets < 0]) == 0

    grad_output = torch.rand(ref.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ours.backward(grad_output)
    ref.backward(grad_output)
    torch.testing.assert_close(ours_logits.grad, ref_logits.grad, **TOLERANCE[dtype])
    assert torch.count_nonzero(ours_logits.grad[targets < 0]) == 0


def test_module_returns_summed_loss_and_accepts_int64_targets():
    logits, targets = make_case(torch.float32)
    logits.requires_grad_()
    loss = SigmoidFocalLoss(gamma=2.0, alpha=0.25)(logits, targets.long())
    assert loss.dim() == 0
    torch.testing.assert_close(loss, reference_loss(logits, targets, 2.0, 0.25).sum())
    loss.backward()
    ref_logits = logits.detach().clone().requires_grad_()
    reference_loss(ref_logits, targets, 2.0, 0.25).sum().backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)
    assert repr(SigmoidFocalLoss(2.0, 0.25)) == "SigmoidFocalLoss(gamma=2.0, alpha=0.25)"


def test_extreme_logits_stay_finite():
    logits = torch.tensor([[-100.0, 100.0, 0.0], [100.0, -100.0, 30.0]], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 1], dtype=torch.int32)
    loss = sigmoid_focal_loss(logits, targets, 2.0, 0.25)
    ref_logits = logits.detach().clone().requires_grad_()
    ref = reference_loss(ref_logits, targets, 2.0, 0.25)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ref)
    loss.sum().backward()
    ref.sum().backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_autocast_runs_in_float32():
    logits, targets = make_case(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sigmoid_focal_loss(logits.bfloat16(), targets, 2.0, 0.25)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference_loss(logits.bfloat16().float(), targets, 2.0, 0.25))


def test_gradcheck():
    logits, targets = make_case(torch.float64, num_rows=6, num_classes=3, scale=2.0)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, targets, 2.0, 0.25), (logits,))


def test_empty_batch():
    logits = torch.zeros(0, 5, requires_grad=True)
    loss = SigmoidFocalLoss(2.0, 0.25)(logits, torch.zeros(0, dtype=torch.int32))
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == (0, 5)
