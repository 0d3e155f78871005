"""ROIAlign (maskrcnn_benchmark._C) against torchvision.ops.roi_align(aligned=False), Detectron v1 semantics."""
import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from maskrcnn_benchmark.layers import ROIAlign, roi_align


def random_rois(num_rois, num_images, image_height, image_width, generator, dtype):
    """(K, 5) RoIs in image pixels: some partly or fully outside the image, some tiny or degenerate."""
    x = torch.empty(num_rois, 2, dtype=dtype).uniform_(-0.3, 1.3, generator=generator) * image_width
    y = torch.empty(num_rois, 2, dtype=dtype).uniform_(-0.3, 1.3, generator=generator) * image_height
    boxes = torch.stack([x.min(1).values, y.min(1).values, x.max(1).values, y.max(1).values], dim=1)
    tiny = torch.rand(num_rois, generator=generator) < 0.25
    sizes = torch.empty(num_rois, 2, dtype=dtype).uniform_(0, 1.5, generator=generator)
    boxes[tiny, 2:] = boxes[tiny, :2] + sizes[tiny]
    batch_index = torch.randint(num_images, (num_rois, 1), generator=generator).to(dtype)
    return torch.cat([batch_index, boxes], dim=1)


def make_case(dtype, spatial_scale, num_rois=12, num_images=2, channels=5, height=13, width=17, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_images, channels, height, width, dtype=dtype, generator=generator)
    rois = random_rois(num_rois, num_images, height / spatial_scale, width / spatial_scale, generator, dtype)
    return features, rois


TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1.0 / 16])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("output_size", [(7, 7), (14, 14), (3, 5)])
def test_forward_and_backward_match_torchvision(dtype, spatial_scale, sampling_ratio, output_size):
    features, rois = make_case(dtype, spatial_scale, seed=sampling_ratio)
    ours_input = features.clone().requires_grad_()
    ref_input = features.clone().requires_grad_()

    ours = roi_align(ours_input, rois, output_size, spatial_scale, sampling_ratio)
    ref = tv_roi_align(ref_input, rois, output_size, spatial_scale, sampling_ratio, aligned=False)
    assert ours.shape == ref.shape == (rois.shape[0], features.shape[1], *output_size)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, ref, atol=TOLERANCE[dtype], rtol=0)

    grad_output = torch.randn(ref.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ours.backward(grad_output)
    ref.backward(grad_output)
    torch.testing.assert_close(ours_input.grad, ref_input.grad, atol=TOLERANCE[dtype], rtol=1e-5)


def test_larger_feature_map_with_many_rois_matches_torchvision():
    features, rois = make_case(torch.float32, 0.25, num_rois=300, num_images=2, channels=18, height=50, width=68)
    ours_input = features.clone().requires_grad_()
    ref_input = features.clone().requires_grad_()
    ours = roi_align(ours_input, rois, (7, 7), 0.25, 2)
    ref = tv_roi_align(ref_input, rois, (7, 7), 0.25, 2, aligned=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(ours_input.grad, ref_input.grad, atol=1e-4, rtol=1e-5)


def test_non_contiguous_input_matches_torchvision():
    features, rois = make_case(torch.float32, 0.5)
    channels_last = features.to(memory_format=torch.channels_last)
    ours = roi_align(channels_last, rois, 7, 0.5, 2)
    ref = tv_roi_align(features, rois, 7, 0.5, 2, aligned=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gradcheck(sampling_ratio):
    features, rois = make_case(torch.float64, 0.5, num_rois=4, channels=2, height=6, width=7)
    features.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: roi_align(x, rois, (3, 2), 0.5, sampling_ratio), (features,))


def test_zero_rois():
    features = torch.randn(2, 3, 8, 9, requires_grad=True)
    rois = torch.zeros(0, 5)
    output = roi_align(features, rois, (7, 7), 0.25, 2)
    assert output.shape == (0, 3, 7, 7)
    output.sum().backward()
    assert features.grad.shape == features.shape
    assert torch.count_nonzero(features.grad) == 0


def test_autocast_runs_in_float32():
    features, rois = make_case(torch.float32, 0.25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from_float32 = roi_align(features, rois, (7, 7), 0.25, 2)
        from_bf16 = ROIAlign((7, 7), 0.25, 2)(features.bfloat16(), rois.bfloat16())
    assert from_float32.dtype == from_bf16.dtype == torch.float32
    torch.testing.assert_close(from_float32, roi_align(features, rois, (7, 7), 0.25, 2), atol=0, rtol=0)
    expected = roi_align(features.bfloat16().float(), rois.bfloat16().float(), (7, 7), 0.25, 2)
    torch.testing.assert_close(from_bf16, expected, atol=0, rtol=0)


def test_autocast_backward_reaches_half_precision_input():
    features, rois = make_case(torch.float32, 0.25)
    features = features.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = roi_align(features, rois, (7, 7), 0.25, 2)
    output.sum().backward()
    assert features.grad.dtype == torch.bfloat16
    reference_input = features.detach().float().requires_grad_()
    tv_roi_align(reference_input, rois, (7, 7), 0.25, 2, aligned=False).sum().backward()
    torch.testing.assert_close(features.grad, reference_input.grad.bfloat16())


def test_module_matches_function_and_repr():
    features, rois = make_case(torch.float32, 0.125)
    module = ROIAlign((14, 14), 0.125, 0)
    torch.testing.assert_close(module(features, rois), roi_align(features, rois, (14, 14), 0.125, 0), atol=0, rtol=0)
    assert repr(module) == "ROIAlign(output_size=(14, 14), spatial_scale=0.125, sampling_ratio=0)"
