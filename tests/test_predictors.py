"""Box and mask predictors: upstream's shape test for every registered predictor, their
initialisation and class-agnostic regression."""
import pytest
import torch
import torch.nn.functional as F

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.roi_heads.box_head.roi_box_predictors import (
    FastRCNNPredictor,
    FPNPredictor,
)
from maskrcnn_benchmark.modeling.roi_heads.mask_head.roi_mask_predictors import (
    MaskRCNNC4Predictor,
    MaskRCNNConv1x1Predictor,
)

IN_CHANNELS = 64


def _outputs(predictors, hwsize):
    for name, builder in predictors.items():
        cfg = default_cfg.clone()
        predictor = builder(cfg, IN_CHANNELS)
        x = torch.rand(2, IN_CHANNELS, hwsize, hwsize)
        yield name, x, predictor(x), cfg


def test_registered_box_predictors_return_scores_and_deltas():
    assert {"FastRCNNPredictor", "FPNPredictor"} <= set(registry.ROI_BOX_PREDICTOR)
    for name, x, out, cfg in _outputs(registry.ROI_BOX_PREDICTOR, hwsize=1):
        assert len(out) == 2, name
        scores, deltas = out
        assert scores.shape == (x.shape[0], cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES), name
        assert deltas.shape == (x.shape[0], 4 * cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES), name


def test_registered_mask_predictors_return_one_channel_per_class():
    assert {"MaskRCNNC4Predictor", "MaskRCNNConv1x1Predictor"} <= set(registry.ROI_MASK_PREDICTOR)
    for name, x, out, cfg in _outputs(registry.ROI_MASK_PREDICTOR, hwsize=14):
        assert out.shape[0] == x.shape[0], name
        assert out.shape[1] == cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES, name


@pytest.mark.parametrize("predictor_class", [MaskRCNNC4Predictor, MaskRCNNConv1x1Predictor])
def test_mask_predictor_given_labels_gives_their_channels_of_the_full_logits(predictor_class):
    torch.manual_seed(0)
    predictor = predictor_class(default_cfg, IN_CHANNELS)
    torch.nn.init.normal_(predictor.mask_fcn_logits.bias)  # initialised to zero
    x = torch.rand(5, IN_CHANNELS, 14, 14)
    labels = torch.tensor([3, 80, 0, 3, 17])
    own = predictor(x, labels=labels)
    full = predictor(x)
    assert own.shape == (5, 1) + full.shape[2:]
    assert torch.allclose(own[:, 0], full[torch.arange(5), labels], atol=1e-5)
    assert predictor(x[:0], labels=labels[:0]).shape == (0, 1) + full.shape[2:]


def test_mask_predictor_resolutions():
    x = torch.rand(3, IN_CHANNELS, 14, 14)
    assert MaskRCNNC4Predictor(default_cfg, IN_CHANNELS)(x).shape == (3, 81, 28, 28)
    assert MaskRCNNConv1x1Predictor(default_cfg, IN_CHANNELS)(x).shape == (3, 81, 14, 14)


@pytest.mark.parametrize("predictor_class", [FastRCNNPredictor, FPNPredictor])
def test_box_predictor_init(predictor_class):
    torch.manual_seed(0)
    predictor = predictor_class(default_cfg, 1024)
    assert predictor.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert predictor.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.02)
    assert torch.all(predictor.cls_score.bias == 0) and torch.all(predictor.bbox_pred.bias == 0)


@pytest.mark.parametrize("predictor_class", [FastRCNNPredictor, FPNPredictor])
def test_class_agnostic_box_regression_has_two_boxes(predictor_class):
    cfg = default_cfg.clone()
    cfg.MODEL.CLS_AGNOSTIC_BBOX_REG = True
    scores, deltas = predictor_class(cfg, IN_CHANNELS)(torch.rand(5, IN_CHANNELS, 1, 1))
    assert scores.shape == (5, 81) and deltas.shape == (5, 8)


def test_fast_rcnn_predictor_averages_the_spatial_features():
    torch.manual_seed(0)
    predictor = FastRCNNPredictor(default_cfg, IN_CHANNELS)
    x = torch.randn(4, IN_CHANNELS, 7, 7)
    scores, deltas = predictor(x)
    pooled = x.mean(dim=(2, 3))
    cls_score, bbox_pred = predictor.cls_score, predictor.bbox_pred
    torch.testing.assert_close(scores, F.linear(pooled, cls_score.weight, cls_score.bias))
    torch.testing.assert_close(deltas, F.linear(pooled, bbox_pred.weight, bbox_pred.bias))


def test_fpn_predictor_rejects_spatial_features():
    predictor = FPNPredictor(default_cfg, IN_CHANNELS)
    with pytest.raises(ValueError, match="FastRCNNPredictor"):
        predictor(torch.rand(2, IN_CHANNELS, 7, 7))


def test_mask_c4_predictor_layers_and_init():
    torch.manual_seed(0)
    predictor = MaskRCNNC4Predictor(default_cfg, 256)
    deconv, logits = predictor.conv5_mask, predictor.mask_fcn_logits
    assert deconv.kernel_size == (2, 2) and deconv.stride == (2, 2) and deconv.out_channels == 256
    assert logits.kernel_size == (1, 1) and logits.out_channels == 81
    # MSRAFill: kaiming normal with fan_out; a transposed conv's weight is (in, out, k, k), so
    # PyTorch's "fan_out" is in_channels * k * k for it.
    assert deconv.weight.std().item() == pytest.approx((2.0 / (256 * 4)) ** 0.5, rel=0.02)
    assert logits.weight.std().item() == pytest.approx((2.0 / 81) ** 0.5, rel=0.05)
    assert torch.all(deconv.bias == 0) and torch.all(logits.bias == 0)
    x = torch.randn(2, 256, 14, 14)
    upsampled = F.relu(F.conv_transpose2d(x, deconv.weight, deconv.bias, stride=2))
    expected = F.conv2d(upsampled, logits.weight, logits.bias)
    torch.testing.assert_close(predictor(x), expected, rtol=1e-4, atol=1e-5)
