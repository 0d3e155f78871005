"""CUDA kernels of maskrcnn_benchmark._C against torchvision.ops on CUDA, our CPU kernels, and
direct PyTorch formulas: ROIAlign, ROIPool and NMS forward/backward, and the sigmoid focal loss.

Every test skips without a GPU or when ``_C`` was built without CUDA.
"""
import pytest
import torch
import torchvision.ops


def _skip_reason():
    if not torch.cuda.is_available():
        return "CUDA is not available"
    try:
        from maskrcnn_benchmark import _C
    except ImportError as error:
        return f"maskrcnn_benchmark._C does not import ({error}); build it with bash tests/run.sh"
    if not _C.compiled_with_cuda:
        return (
            "maskrcnn_benchmark._C was built without CUDA; rebuild it with "
            "FORCE_CUDA=1 python setup.py build_ext --inplace (or bash tests/run.sh where nvcc exists)"
        )
    return None


_SKIP_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")

DTYPES = [torch.float32, torch.float64]
# Tolerances for results that only differ by summation order (float atomics, FMA contraction).
TOLERANCES = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}

# (batch, channels, height, width, pooled_height, pooled_width, spatial_scale, sampling_ratio)
ROI_CASES = [
    (2, 3, 20, 25, 7, 7, 1.0 / 4, 2),
    (2, 3, 20, 25, 7, 7, 1.0 / 4, 0),
    (1, 8, 7, 7, 14, 14, 1.0, 0),
    (3, 2, 32, 17, 2, 3, 1.0 / 16, 1),
]


def _C():
    from maskrcnn_benchmark import _C

    return _C


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _random_rois(num_rois, batch_size, height, width, spatial_scale, dtype):
    """(num_rois + 4, 5) CPU RoIs [batch_index, x1, y1, x2, y2] in image pixels: random boxes that
    reach past the image borders, plus a zero-size, an inverted, and two fully outside boxes."""
    image_h, image_w = height / spatial_scale, width / spatial_scale
    x1 = torch.rand(num_rois) * image_w * 1.2 - 0.1 * image_w
    y1 = torch.rand(num_rois) * image_h * 1.2 - 0.1 * image_h
    x2 = x1 + torch.rand(num_rois) * image_w * 0.6
    y2 = y1 + torch.rand(num_rois) * image_h * 0.6
    batch_index = torch.randint(batch_size, (num_rois,)).to(x1.dtype)
    random_rois = torch.stack([batch_index, x1, y1, x2, y2], dim=1)
    special = torch.tensor(
        [
            [0, 5.0, 5.0, 5.0, 5.0],
            [batch_size - 1, 0.5 * image_w, 0.5 * image_h, 0.2 * image_w, 0.1 * image_h],
            [0, -50.0, -50.0, -20.0, -20.0],
            [batch_size - 1, image_w + 10, image_h + 10, image_w + 40, image_h + 30],
        ]
    )
    return torch.cat([random_rois, special]).to(dtype)


def _roi_inputs(case, dtype, num_rois=12):
    batch, channels, height, width, _, _, spatial_scale, _ = case
    features = torch.randn(batch, channels, height, width, dtype=dtype)
    rois = _random_rois(num_rois, batch, height, width, spatial_scale, dtype)
    return features, rois


# ----------------------------------------------------------------------------------------------
# ROIAlign
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROI_CASES)
def test_roi_align_forward_matches_torchvision(case, dtype):
    _, _, _, _, pooled_h, pooled_w, spatial_scale, sampling_ratio = case
    features, rois = _roi_inputs(case, dtype)
    features, rois = features.cuda(), rois.cuda()
    ours = _C().roi_align_forward(features, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio)
    reference = torchvision.ops.roi_align(
        features, rois, (pooled_h, pooled_w), spatial_scale, sampling_ratio, aligned=False
    )
    assert ours.shape == (rois.shape[0], features.shape[1], pooled_h, pooled_w)
    assert ours.device == features.device and ours.dtype == dtype
    torch.testing.assert_close(ours, reference, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROI_CASES)
def test_roi_align_backward_matches_torchvision(case, dtype):
    batch, channels, height, width, pooled_h, pooled_w, spatial_scale, sampling_ratio = case
    features, rois = _roi_inputs(case, dtype)
    features, rois = features.cuda().requires_grad_(), rois.cuda()
    grad_output = torch.randn(rois.shape[0], channels, pooled_h, pooled_w, dtype=dtype, device="cuda")
    torchvision.ops.roi_align(
        features, rois, (pooled_h, pooled_w), spatial_scale, sampling_ratio, aligned=False
    ).backward(grad_output)
    ours = _C().roi_align_backward(
        grad_output, rois, spatial_scale, pooled_h, pooled_w, batch, channels, height, width, sampling_ratio
    )
    assert ours.shape == features.shape
    torch.testing.assert_close(ours, features.grad, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROI_CASES)
def test_roi_align_cuda_matches_cpu_kernel(case, dtype):
    batch, channels, height, width, pooled_h, pooled_w, spatial_scale, sampling_ratio = case
    features, rois = _roi_inputs(case, dtype)
    grad_output = torch.randn(rois.shape[0], channels, pooled_h, pooled_w, dtype=dtype)
    sizes = (batch, channels, height, width)
    forward = {}
    backward = {}
    for device in ("cpu", "cuda"):
        forward[device] = _C().roi_align_forward(
            features.to(device), rois.to(device), spatial_scale, pooled_h, pooled_w, sampling_ratio
        )
        backward[device] = _C().roi_align_backward(
            grad_output.to(device), rois.to(device), spatial_scale, pooled_h, pooled_w, *sizes, sampling_ratio
        )
    torch.testing.assert_close(forward["cuda"].cpu(), forward["cpu"], **TOLERANCES[dtype])
    torch.testing.assert_close(backward["cuda"].cpu(), backward["cpu"], **TOLERANCES[dtype])


def test_roi_align_many_elements_uses_the_whole_grid():
    """More outputs than the 4096-block grid covers in one pass (grid-stride loop)."""
    features = torch.randn(2, 256, 50, 68, device="cuda")
    rois = _random_rois(600, 2, 50, 68, 1.0 / 16, torch.float32).cuda()
    ours = _C().roi_align_forward(features, rois, 1.0 / 16, 7, 7, 2)
    assert ours.numel() > 4096 * 256
    reference = torchvision.ops.roi_align(features, rois, (7, 7), 1.0 / 16, 2, aligned=False)
    torch.testing.assert_close(ours, reference, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_align_empty_rois(dtype):
    features = torch.randn(2, 3, 10, 12, dtype=dtype, device="cuda")
    rois = torch.zeros(0, 5, dtype=dtype, device="cuda")
    output = _C().roi_align_forward(features, rois, 0.5, 7, 7, 2)
    assert output.shape == (0, 3, 7, 7) and output.device == features.device and output.dtype == dtype
    grad = _C().roi_align_backward(output, rois, 0.5, 7, 7, 2, 3, 10, 12, 2)
    assert grad.shape == (2, 3, 10, 12) and grad.is_cuda
    assert torch.count_nonzero(grad) == 0


def test_roi_align_runs_on_the_current_stream():
    features, rois = _roi_inputs(ROI_CASES[0], torch.float32)
    features, rois = features.cuda(), rois.cuda()
    reference = torchvision.ops.roi_align(features, rois, (7, 7), 0.25, 2, aligned=False)
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        ours = _C().roi_align_forward(features, rois, 0.25, 7, 7, 2)
    torch.cuda.current_stream().wait_stream(side_stream)
    torch.testing.assert_close(ours, reference, **TOLERANCES[torch.float32])


def test_roi_align_layer_gradcheck_on_cuda():
    from maskrcnn_benchmark.layers import ROIAlign

    features = torch.randn(2, 2, 9, 8, dtype=torch.float64, device="cuda", requires_grad=True)
    rois = _random_rois(4, 2, 9, 8, 0.5, torch.float64).cuda()
    layer = ROIAlign((3, 2), 0.5, 2)
    torch.testing.assert_close(layer(features, rois), _C().roi_align_forward(features, rois, 0.5, 3, 2, 2))
    assert torch.autograd.gradcheck(lambda x: layer(x, rois), (features,))


# ----------------------------------------------------------------------------------------------
# ROIPool
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROI_CASES)
def test_roi_pool_forward_matches_torchvision(case, dtype):
    _, _, _, width, pooled_h, pooled_w, spatial_scale, _ = case
    features, rois = _roi_inputs(case, dtype)
    features, rois = features.cuda(), rois.cuda()
    output, argmax = _C().roi_pool_forward(features, rois, spatial_scale, pooled_h, pooled_w)
    reference = torchvision.ops.roi_pool(features, rois, (pooled_h, pooled_w), spatial_scale)
    assert output.shape == argmax.shape == (rois.shape[0], features.shape[1], pooled_h, pooled_w)
    assert argmax.dtype == torch.int64 and argmax.is_cuda
    torch.testing.assert_close(output, reference, rtol=0, atol=0)

    # argmax is the flat h * W + w index of the maximum in the RoI's input plane, -1 for empty bins.
    empty = argmax < 0
    assert bool(empty.any()), "the out-of-image RoIs must produce empty bins"
    assert torch.count_nonzero(output[empty]) == 0
    planes = features[rois[:, 0].long()].flatten(2)  # (K, C, H * W)
    picked = planes.gather(2, argmax.clamp(min=0).flatten(2)).view_as(output)
    torch.testing.assert_close(picked[~empty], output[~empty], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROI_CASES)
def test_roi_pool_backward_matches_torchvision(case, dtype):
    batch, channels, height, width, pooled_h, pooled_w, spatial_scale, _ = case
    features, rois = _roi_inputs(case, dtype)
    features, rois = features.cuda().requires_grad_(), rois.cuda()
    grad_output = torch.randn(rois.shape[0], channels, pooled_h, pooled_w, dtype=dtype, device="cuda")
    torchvision.ops.roi_pool(features, rois, (pooled_h, pooled_w), spatial_scale).backward(grad_output)
    _, argmax = _C().roi_pool_forward(features.detach(), rois, spatial_scale, pooled_h, pooled_w)
    ours = _C().roi_pool_backward(
        grad_output, features.detach(), rois, argmax, spatial_scale, pooled_h, pooled_w, batch, channels, height,
        width,
    )
    assert ours.shape == features.shape
    torch.testing.assert_close(ours, features.grad, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ROI_CASES)
def test_roi_pool_cuda_matches_cpu_kernel(case, dtype):
    batch, channels, height, width, pooled_h, pooled_w, spatial_scale, _ = case
    features, rois = _roi_inputs(case, dtype)
    grad_output = torch.randn(rois.shape[0], channels, pooled_h, pooled_w, dtype=dtype)
    sizes = (batch, channels, height, width)
    results = {}
    for device in ("cpu", "cuda"):
        output, argmax = _C().roi_pool_forward(features.to(device), rois.to(device), spatial_scale, pooled_h, pooled_w)
        grad = _C().roi_pool_backward(
            grad_output.to(device), features.to(device), rois.to(device), argmax, spatial_scale, pooled_h, pooled_w,
            *sizes,
        )
        results[device] = (output.cpu(), argmax.cpu(), grad.cpu())
    torch.testing.assert_close(results["cuda"][0], results["cpu"][0], rtol=0, atol=0)
    assert torch.equal(results["cuda"][1], results["cpu"][1])
    torch.testing.assert_close(results["cuda"][2], results["cpu"][2], **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_pool_empty_rois(dtype):
    features = torch.randn(2, 3, 10, 12, dtype=dtype, device="cuda")
    rois = torch.zeros(0, 5, dtype=dtype, device="cuda")
    output, argmax = _C().roi_pool_forward(features, rois, 0.5, 7, 7)
    assert output.shape == argmax.shape == (0, 3, 7, 7)
    assert output.is_cuda and argmax.dtype == torch.int64
    grad = _C().roi_pool_backward(output, features, rois, argmax, 0.5, 7, 7, 2, 3, 10, 12)
    assert grad.shape == (2, 3, 10, 12) and torch.count_nonzero(grad) == 0


def test_roi_pool_layer_gradcheck_on_cuda():
    from maskrcnn_benchmark.layers import ROIPool

    features = torch.randn(2, 2, 9, 8, dtype=torch.float64, device="cuda", requires_grad=True)
    rois = _random_rois(4, 2, 9, 8, 0.5, torch.float64).cuda()
    layer = ROIPool((3, 2), 0.5)
    torch.testing.assert_close(layer(features, rois), torchvision.ops.roi_pool(features, rois, (3, 2), 0.5))
    assert torch.autograd.gradcheck(lambda x: layer(x, rois), (features,))


# ----------------------------------------------------------------------------------------------
# NMS
# ----------------------------------------------------------------------------------------------


def _integer_boxes(num_boxes, dtype):
    """Boxes with integer corners and distinct scores: every IoU is then computed exactly, so CUDA
    and reference agree even for pairs whose IoU equals the threshold."""
    x1 = torch.randint(0, 200, (num_boxes,))
    y1 = torch.randint(0, 200, (num_boxes,))
    x2 = x1 + torch.randint(0, 60, (num_boxes,))
    y2 = y1 + torch.randint(0, 60, (num_boxes,))
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(dtype)
    scores = (torch.randperm(num_boxes) + 1).to(dtype) / num_boxes
    return boxes, scores


def _as_float32(threshold):
    """The threshold rounded to float32, so float and double kernels compare against one value."""
    return float(torch.tensor(threshold, dtype=torch.float32))


def _torchvision_nms_plus_one(boxes, scores, threshold):
    """torchvision NMS with the +1 convention (x2, y2 shifted by one), kept indices ascending."""
    shifted = boxes.clone()
    shifted[:, 2:] += 1
    return torch.sort(torchvision.ops.nms(shifted, scores, threshold)).values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_boxes", [1, 63, 64, 65, 300, 3000])
@pytest.mark.parametrize("threshold", [0.25, 0.5, 0.7])
def test_nms_matches_torchvision_with_plus_one_boxes(num_boxes, threshold, dtype):
    threshold = _as_float32(threshold)
    boxes, scores = _integer_boxes(num_boxes, dtype)
    boxes, scores = boxes.cuda(), scores.cuda()
    keep = _C().nms(boxes, scores, threshold)
    assert keep.dtype == torch.int64 and keep.device == boxes.device
    assert torch.equal(keep, _torchvision_nms_plus_one(boxes, scores, threshold))


def test_nms_keeps_boxes_whose_iou_equals_the_threshold():
    """CUDA suppresses only when IoU > threshold (upstream); these two boxes have IoU exactly 0.5
    with +1 areas: intersection 10 * 5 = 50 pixels, union 100 + 50 - 50 = 100."""
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 4.0]], device="cuda")
    scores = torch.tensor([0.9, 0.8], device="cuda")
    assert _C().nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert _C().nms(boxes, scores, 0.49).tolist() == [0]


def _without_threshold_ties(boxes, scores, threshold_fraction):
    """Drops every box whose +1 IoU with another box is exactly numerator / denominator, where the
    CPU kernel (>=) and the CUDA kernel (>) legitimately differ."""
    numerator, denominator = threshold_fraction
    corners = boxes.long()
    widths = corners[:, 2] - corners[:, 0] + 1
    heights = corners[:, 3] - corners[:, 1] + 1
    areas = widths * heights
    low = torch.max(corners[:, None, :2], corners[None, :, :2])
    high = torch.min(corners[:, None, 2:], corners[None, :, 2:])
    intersection = (high - low + 1).clamp(min=0).prod(dim=2)
    union = areas[:, None] + areas[None, :] - intersection
    tie = intersection * denominator == union * numerator
    tie.fill_diagonal_(False)
    untied = ~tie.any(dim=1)
    return boxes[untied], scores[untied]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_boxes", [65, 1000])
@pytest.mark.parametrize("threshold_fraction", [(1, 4), (1, 2), (3, 4)])
def test_nms_cuda_matches_cpu_kernel(num_boxes, threshold_fraction, dtype):
    boxes, scores = _without_threshold_ties(*_integer_boxes(num_boxes, dtype), threshold_fraction)
    threshold = threshold_fraction[0] / threshold_fraction[1]
    keep_cuda = _C().nms(boxes.cuda(), scores.cuda(), threshold)
    keep_cpu = _C().nms(boxes, scores, threshold)
    assert torch.equal(keep_cuda.cpu(), keep_cpu)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_empty_input(dtype):
    keep = _C().nms(torch.zeros(0, 4, dtype=dtype, device="cuda"), torch.zeros(0, dtype=dtype, device="cuda"), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64 and keep.is_cuda


def test_nms_layer_on_cuda():
    from maskrcnn_benchmark.layers import nms

    threshold = _as_float32(0.7)
    boxes, scores = _integer_boxes(500, torch.float32)
    boxes, scores = boxes.cuda(), scores.cuda()
    keep = nms(boxes, scores, threshold)
    assert torch.equal(keep, _torchvision_nms_plus_one(boxes, scores, threshold))


# ----------------------------------------------------------------------------------------------
# Sigmoid focal loss
# ----------------------------------------------------------------------------------------------


def _focal_inputs(num_rows, num_classes, dtype, scale=4.0):
    """Logits (N, C) and int32 targets in -1..C (-1 ignored, 0 background); every 7th row ignored."""
    logits = torch.randn(num_rows, num_classes, dtype=dtype) * scale
    targets = torch.randint(-1, num_classes + 1, (num_rows,), dtype=torch.int32)
    targets[::7] = -1
    return logits, targets


def _torchvision_focal_loss(logits, targets, gamma, alpha):
    """Element-wise loss from torchvision.ops.sigmoid_focal_loss with one-hot targets, zero on rows
    whose target is negative (ignored)."""
    num_classes = logits.shape[1]
    classes = torch.arange(1, num_classes + 1, device=logits.device)
    one_hot = (targets[:, None].long() == classes[None, :]).to(logits.dtype)
    loss = torchvision.ops.sigmoid_focal_loss(logits, one_hot, alpha=alpha, gamma=gamma, reduction="none")
    return torch.where((targets >= 0)[:, None], loss, torch.zeros_like(loss))


def _log_sigmoid_focal_loss(logits, targets, gamma, alpha):
    """The focal loss written with log-sigmoids, finite for any finite logit."""
    classes = torch.arange(1, logits.shape[1] + 1, device=logits.device)
    positive = targets[:, None].long() == classes[None, :]
    negative = (targets[:, None] >= 0) & ~positive
    p = torch.sigmoid(logits)
    positive_loss = -alpha * (1 - p) ** gamma * torch.nn.functional.logsigmoid(logits)
    negative_loss = -(1 - alpha) * p**gamma * torch.nn.functional.logsigmoid(-logits)
    zero = torch.zeros_like(logits)
    return torch.where(positive, positive_loss, zero) + torch.where(negative, negative_loss, zero)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (1.0, 0.5), (1.5, 0.75)])
@pytest.mark.parametrize("num_rows, num_classes", [(37, 5), (200, 80)])
def test_sigmoid_focal_loss_matches_torchvision(num_rows, num_classes, gamma, alpha, dtype):
    logits, targets = _focal_inputs(num_rows, num_classes, dtype)
    logits, targets = logits.cuda(), targets.cuda()
    d_losses = torch.rand_like(logits)
    losses = _C().sigmoid_focalloss_forward(logits, targets, num_classes, gamma, alpha)
    d_logits = _C().sigmoid_focalloss_backward(logits, targets, d_losses, num_classes, gamma, alpha)

    reference_logits = logits.double().clone().requires_grad_()
    reference = _torchvision_focal_loss(reference_logits, targets, gamma, alpha)
    (reference_grad,) = torch.autograd.grad(reference, reference_logits, d_losses.double())
    assert losses.shape == d_logits.shape == logits.shape
    assert losses.dtype == d_logits.dtype == dtype
    torch.testing.assert_close(losses, reference.detach().to(dtype), **TOLERANCES[dtype])
    torch.testing.assert_close(d_logits, reference_grad.to(dtype), **TOLERANCES[dtype])
    ignored = targets < 0
    assert bool(ignored.any())
    assert torch.count_nonzero(losses[ignored]) == 0 and torch.count_nonzero(d_logits[ignored]) == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_focal_loss_is_finite_for_extreme_logits(dtype):
    logits = torch.tensor([[-200.0, 200.0, -90.0, 90.0]] * 3, dtype=dtype, device="cuda")
    targets = torch.tensor([1, 2, 0], dtype=torch.int32, device="cuda")
    d_losses = torch.ones_like(logits)
    losses = _C().sigmoid_focalloss_forward(logits, targets, 4, 2.0, 0.25)
    d_logits = _C().sigmoid_focalloss_backward(logits, targets, d_losses, 4, 2.0, 0.25)
    assert bool(torch.isfinite(losses).all()) and bool(torch.isfinite(d_logits).all())

    reference_logits = logits.double().clone().requires_grad_()
    reference = _log_sigmoid_focal_loss(reference_logits, targets, 2.0, 0.25)
    (reference_grad,) = torch.autograd.grad(reference, reference_logits, d_losses.double())
    torch.testing.assert_close(losses, reference.detach().to(dtype), **TOLERANCES[dtype])
    torch.testing.assert_close(d_logits, reference_grad.to(dtype), **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_focal_loss_cuda_matches_cpu_kernel(dtype):
    num_classes = 9
    logits, targets = _focal_inputs(150, num_classes, dtype)
    d_losses = torch.rand_like(logits)
    results = {}
    for device in ("cpu", "cuda"):
        args = (logits.to(device), targets.to(device))
        results[device] = (
            _C().sigmoid_focalloss_forward(*args, num_classes, 2.0, 0.25).cpu(),
            _C().sigmoid_focalloss_backward(*args, d_losses.to(device), num_classes, 2.0, 0.25).cpu(),
        )
    torch.testing.assert_close(results["cuda"][0], results["cpu"][0], **TOLERANCES[dtype])
    torch.testing.assert_close(results["cuda"][1], results["cpu"][1], **TOLERANCES[dtype])


def test_sigmoid_focal_loss_many_elements_and_empty_input():
    num_classes = 80
    logits, targets = _focal_inputs(20000, num_classes, torch.float32)
    logits, targets = logits.cuda(), targets.cuda()
    assert logits.numel() > 4096 * 256
    losses = _C().sigmoid_focalloss_forward(logits, targets, num_classes, 2.0, 0.25)
    reference = _torchvision_focal_loss(logits.double(), targets, 2.0, 0.25)
    torch.testing.assert_close(losses, reference.float(), **TOLERANCES[torch.float32])

    empty = torch.zeros(0, num_classes, device="cuda")
    empty_targets = torch.zeros(0, dtype=torch.int32, device="cuda")
    assert _C().sigmoid_focalloss_forward(empty, empty_targets, num_classes, 2.0, 0.25).shape == (0, num_classes)
    grad = _C().sigmoid_focalloss_backward(empty, empty_targets, empty, num_classes, 2.0, 0.25)
    assert grad.shape == (0, num_classes) and grad.is_cuda


def test_sigmoid_focal_loss_layer_on_cuda():
    from maskrcnn_benchmark.layers import SigmoidFocalLoss

    num_classes = 6
    logits, targets = _focal_inputs(40, num_classes, torch.float64)
    logits, targets = logits.cuda().requires_grad_(), targets.cuda()
    loss = SigmoidFocalLoss(2.0, 0.25)(logits, targets)
    loss.backward()

    reference_logits = logits.detach().clone().requires_grad_()
    reference = _torchvision_focal_loss(reference_logits, targets, 2.0, 0.25).sum()
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(logits.grad, reference_logits.grad)
