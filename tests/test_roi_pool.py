"""ROIPool (maskrcnn_benchmark._C) against torchvision.ops.roi_pool (Fast R-CNN semantics)."""
import pytest
import torch
from torchvision.ops import roi_pool as tv_roi_pool

from maskrcnn_benchmark.layers import ROIPool, roi_pool
from maskrcnn_benchmark.layers._C_loader import _C


def make_case(dtype, spatial_scale, num_rois=12, num_images=2, channels=5, height=13, width=17, seed=0):
    """Random features and (K, 5) RoIs in image pixels, some partly or fully outside the image, some tiny."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_images, channels, height, width, dtype=dtype, generator=generator)
    image_height, image_width = height / spatial_scale, width / spatial_scale
    x = torch.empty(num_rois, 2, dtype=dtype).uniform_(-0.3, 1.3, generator=generator) * image_width
    y = torch.empty(num_rois, 2, dtype=dtype).uniform_(-0.3, 1.3, generator=generator) * image_height
    boxes = torch.stack([x.min(1).values, y.min(1).values, x.max(1).values, y.max(1).values], dim=1)
    boxes[:3, 2:] = boxes[:3, :2] + 0.5
    batch_index = torch.randint(num_images, (num_rois, 1), generator=generator).to(dtype)
    return features, torch.cat([batch_index, boxes], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1.0 / 16])
@pytest.mark.parametrize("output_size", [(7, 7), (2, 3), (14, 14)])
def test_forward_and_backward_match_torchvision(dtype, spatial_scale, output_size):
    features, rois = make_case(dtype, spatial_scale)
    ours_input = features.clone().requires_grad_()
    ref_input = features.clone().requires_grad_()

    ours = roi_pool(ours_input, rois, output_size, spatial_scale)
    ref = tv_roi_pool(ref_input, rois, output_size, spatial_scale)
    assert ours.shape == ref.shape == (rois.shape[0], features.shape[1], *output_size)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)

    grad_output = torch.randn(ref.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ours.backward(grad_output)
    ref.backward(grad_output)
    torch.testing.assert_close(ours_input.grad, ref_input.grad)


@pytest.mark.parametrize("spatial_scale", [1.0, 0.25])
def test_argmax_matches_torchvision(spatial_scale):
    features, rois = make_case(torch.float32, spatial_scale)
    output, argmax = _C.roi_pool_forward(features, rois, spatial_scale, 7, 7)
    ref_output, ref_argmax = torch.ops.torchvision.roi_pool(features, rois, spatial_scale, 7, 7)
    assert argmax.dtype == torch.int64
    assert (argmax == -1).any(), "the case should contain empty bins"
    torch.testing.assert_close(output, ref_output, atol=0, rtol=0)
    torch.testing.assert_close(argmax, ref_argmax.long(), atol=0, rtol=0)


def test_gradcheck():
    features, rois = make_case(torch.float64, 0.5, num_rois=4, channels=2, height=6, width=7)
    features.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: roi_pool(x, rois, (3, 2), 0.5), (features,))


def test_zero_rois():
    features = torch.randn(1, 4, 8, 9, requires_grad=True)
    output = roi_pool(features, torch.zeros(0, 5), (7, 7), 0.5)
    assert output.shape == (0, 4, 7, 7)
    output.sum().backward()
    assert features.grad.shape == features.shape
    assert torch.count_nonzero(features.grad) == 0


def test_autocast_runs_in_float32():
    features, rois = make_case(torch.float32, 0.25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from_float32 = roi_pool(features, rois, (7, 7), 0.25)
        from_bf16 = ROIPool((7, 7), 0.25)(features.bfloat16(), rois)
    assert from_float32.dtype == from_bf16.dtype == torch.float32
    torch.testing.assert_close(from_float32, tv_roi_pool(features, rois, (7, 7), 0.25), atol=0, rtol=0)
    expected = tv_roi_pool(features.bfloat16().float(), rois, (7, 7), 0.25)
    torch.testing.assert_close(from_bf16, expected, atol=0, rtol=0)


def test_module_matches_function_and_repr():
    features, rois = make_case(torch.float32, 0.5)
    module = ROIPool((7, 7), 0.5)
    torch.testing.assert_close(module(features, rois), roi_pool(features, rois, (7, 7), 0.5), atol=0, rtol=0)
    assert repr(module) == "ROIPool(output_size=(7, 7), spatial_scale=0.5)"
