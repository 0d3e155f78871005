"""Bad input to the _C kernels raises a RuntimeError that names the problem, never a crash."""
import importlib
import sys

import pytest
import torch

from maskrcnn_benchmark.layers import nms, roi_align, roi_pool
from maskrcnn_benchmark.layers._C_loader import _C
from maskrcnn_benchmark.layers.sigmoid_focal_loss import sigmoid_focal_loss

FEATURES = torch.randn(1, 2, 6, 7)
ROIS = torch.tensor([[0.0, 1.0, 1.0, 5.0, 4.0]])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: roi_align(FEATURES, ROIS[:, 1:], 2, 1.0, 2), r"rois must have shape \(K, 5\)"),
        (lambda: roi_align(FEATURES, ROIS.double(), 2, 1.0, 2), "input is Float but rois is Double"),
        (lambda: roi_align(FEATURES, ROIS, 2, 1.0, -1), "sampling_ratio must be >= 0"),
        (lambda: roi_align(FEATURES.int(), ROIS.int(), 2, 1.0, 2), "input must be float32 or float64"),
        (lambda: roi_align(FEATURES[0], ROIS, 2, 1.0, 2), r"input must be a \(N, C, H, W\) feature map"),
        (lambda: roi_align(FEATURES, ROIS, 0, 1.0, 2), "output size must be positive"),
        (lambda: roi_align(FEATURES, ROIS, 2, 0.0, 2), "spatial_scale must be positive"),
        (lambda: roi_align(FEATURES, torch.tensor([[1.0, 1, 1, 5, 4]]), 2, 1.0, 2), "not a valid batch index"),
        (lambda: roi_align(FEATURES, torch.tensor([[-1.0, 1, 1, 5, 4]]), 2, 1.0, 2), "not a valid batch index"),
        (lambda: roi_align(FEATURES, torch.tensor([[0.0, 1, float("nan"), 5, 4]]), 2, 1.0, 2), "non-finite"),
        (lambda: roi_align(FEATURES, torch.tensor([[0.0, 0, 0, 1e30, 3]]), 2, 1.0, 0), "too many for adaptive"),
        (lambda: roi_align(FEATURES, ROIS.to("meta"), 2, 1.0, 2), "input is on cpu but rois is on meta"),
        (lambda: roi_align(FEATURES.to("meta"), ROIS.to("meta"), 2, 1.0, 2), "tensors on meta are not supported"),
        (lambda: roi_pool(FEATURES, ROIS[:, :3], 2, 1.0), r"rois must have shape \(K, 5\)"),
        (lambda: roi_pool(FEATURES.double(), ROIS, 2, 1.0), "input is Double but rois is Float"),
        (lambda: roi_pool(FEATURES, torch.tensor([[3.0, 1, 1, 5, 4]]), 2, 1.0), "not a valid batch index"),
        (lambda: nms(torch.zeros(3, 5), torch.zeros(3), 0.5), r"dets must have shape \(N, 4\)"),
        (lambda: nms(torch.zeros(3, 4), torch.zeros(2), 0.5), r"scores must have shape \(3,\)"),
        (lambda: nms(torch.zeros(3, 4), torch.zeros(3).double(), 0.5), "dets is Float but scores is Double"),
        (lambda: nms(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), 0.5), "float32"),
        (lambda: sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(3), 2.0, 0.25), "targets must be int32 or int64"),
        (lambda: sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(4, dtype=torch.int32), 2.0, 0.25),
         r"targets must have shape \(3,\)"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


def test_roi_align_backward_rejects_a_wrong_grad_shape():
    with pytest.raises(RuntimeError, match=r"grad must have shape \(1, 2, 2, 2\), got \[1, 2, 3, 3\]"):
        _C.roi_align_backward(torch.zeros(1, 2, 3, 3), ROIS, 1.0, 2, 2, 1, 2, 6, 7, 2)


def test_roi_pool_backward_rejects_bad_argmax():
    output, argmax = _C.roi_pool_forward(FEATURES, ROIS, 1.0, 2, 2)
    grad = torch.ones_like(output)
    with pytest.raises(RuntimeError, match="argmax holds 142, which is not -1 or a pixel index"):
        _C.roi_pool_backward(grad, FEATURES, ROIS, torch.full_like(argmax, 142), 1.0, 2, 2, 1, 2, 6, 7)
    with pytest.raises(RuntimeError, match="argmax must be int64"):
        _C.roi_pool_backward(grad, FEATURES, ROIS, argmax.int(), 1.0, 2, 2, 1, 2, 6, 7)
    with pytest.raises(RuntimeError, match="argmax must have the shape of grad"):
        _C.roi_pool_backward(grad, FEATURES, ROIS, argmax[:, :1], 1.0, 2, 2, 1, 2, 6, 7)


def test_focal_loss_backward_rejects_mismatched_d_losses():
    logits = torch.zeros(3, 2)
    targets = torch.zeros(3, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="d_losses must have the shape of logits"):
        _C.sigmoid_focalloss_backward(logits, targets, torch.zeros(3, 3), 2, 2.0, 0.25)
    with pytest.raises(RuntimeError, match="logits is Float but d_losses is Double"):
        _C.sigmoid_focalloss_backward(logits, targets, torch.zeros(3, 2).double(), 2, 2.0, 0.25)


def test_missing_extension_gives_build_instructions(monkeypatch):
    import maskrcnn_benchmark
    import maskrcnn_benchmark.layers._C_loader as loader

    monkeypatch.delattr(maskrcnn_benchmark, "_C")
    monkeypatch.setitem(sys.modules, "maskrcnn_benchmark._C", None)  # makes the import fail
    try:
        with pytest.raises(ImportError, match=r"bash tests/run\.sh.*python setup\.py build develop"):
            importlib.reload(loader)
    finally:
        monkeypatch.undo()
        importlib.reload(loader)
    assert loader._C is _C
