"""FrozenBatchNorm2d, smooth_l1_loss and the empty-batch helpers against PyTorch/torchvision."""
import pytest
import torch
import torchvision.ops
from torch.nn import functional as F

from maskrcnn_benchmark.layers import Conv2d, ConvTranspose2d, FrozenBatchNorm2d, interpolate, smooth_l1_loss


def _random_frozen_bn(n, eps):
    bn = FrozenBatchNorm2d(n, eps=eps)
    generator = torch.Generator().manual_seed(0)
    bn.weight.copy_(torch.rand(n, generator=generator) + 0.5)
    bn.bias.copy_(torch.randn(n, generator=generator))
    bn.running_mean.copy_(torch.randn(n, generator=generator))
    bn.running_var.copy_(torch.rand(n, generator=generator) + 0.1)
    return bn


def test_frozen_bn_matches_torchvision_with_same_eps():
    ours = _random_frozen_bn(8, eps=1e-5)
    reference = torchvision.ops.FrozenBatchNorm2d(8, eps=1e-5)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-6)


def test_frozen_bn_default_has_no_eps_like_upstream():
    bn = _random_frozen_bn(4, eps=0.0)
    x = torch.randn(3, 4, 2, 2)
    expected = (x - bn.running_mean.view(1, -1, 1, 1)) / bn.running_var.sqrt().view(1, -1, 1, 1)
    expected = expected * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), expected, rtol=1e-5, atol=1e-5)


def test_frozen_bn_loads_batchnorm_state_dict_and_has_no_parameters():
    source = torch.nn.BatchNorm2d(6)
    bn = FrozenBatchNorm2d(6)
    bn.load_state_dict(source.state_dict())  # num_batches_tracked is dropped, not an error
    assert list(bn.parameters()) == []


def test_frozen_bn_keeps_float32_buffers_under_half_input():
    bn = _random_frozen_bn(4, eps=0.0)
    x = torch.randn(1, 4, 3, 3)
    out = bn(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert bn.weight.dtype == torch.float32
    torch.testing.assert_close(out.float(), bn(x), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("beta", [1.0 / 9, 1.0, 0.5])
@pytest.mark.parametrize("size_average", [True, False])
def test_smooth_l1_matches_pytorch(beta, size_average):
    generator = torch.Generator().manual_seed(1)
    pred = torch.randn(50, 4, generator=generator, requires_grad=True)
    target = torch.randn(50, 4, generator=generator)
    ours = smooth_l1_loss(pred, target, beta=beta, size_average=size_average)
    reference = F.smooth_l1_loss(pred, target, beta=beta, reduction="mean" if size_average else "sum")
    torch.testing.assert_close(ours, reference)
    (grad_ours,) = torch.autograd.grad(ours, pred)
    (grad_ref,) = torch.autograd.grad(reference, pred)
    torch.testing.assert_close(grad_ours, grad_ref)


def test_smooth_l1_beta_zero_is_l1_with_finite_gradient():
    pred = torch.tensor([0.0, 1.0, -2.0], requires_grad=True)
    target = torch.zeros(3)
    loss = smooth_l1_loss(pred, target, beta=0.0, size_average=False)
    assert loss.item() == pytest.approx(3.0)
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(grad).all()


def test_layer_helpers_accept_empty_batches():
    x = torch.zeros(0, 3, 14, 14)
    assert Conv2d(3, 5, 3, padding=1)(x).shape == (0, 5, 14, 14)
    assert ConvTranspose2d(3, 4, 2, stride=2)(x).shape == (0, 4, 28, 28)
    assert interpolate(x, scale_factor=2, mode="nearest").shape == (0, 3, 28, 28)
