"""LST's modified heads (paper §3.2, Table 1 row 2): fc7 without ReLU, the scaled cosine
classifier, the Mask^X weight transfer T and the class-agnostic MLP mask, alone and in a tiny
Mask R-CNN built from configs/tests/e2e_mask_rcnn_R_18_FPN_tiny_cpu_lst_heads.yaml."""
import logging
import math
import os

import pytest
import torch
import torch.nn.functional as F

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.box_head.roi_box_feature_extractors import (
    FPN2MLPCosineFeatureExtractor,
    FPN2MLPFeatureExtractor,
)
from maskrcnn_benchmark.modeling.roi_heads.box_head.roi_box_predictors import FPNCosinePredictor
from maskrcnn_benchmark.modeling.roi_heads.mask_head.roi_mask_predictors import (
    MaskRCNNC4Predictor,
    MaskXRCNNC4Predictor,
    make_roi_mask_predictor,
)
from maskrcnn_benchmark.modeling.roi_heads.mask_head.weight_transfer import build_bbox2mask
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask

LST_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "configs",
    "tests",
    "e2e_mask_rcnn_R_18_FPN_tiny_cpu_lst_heads.yaml",
)
LOSS_NAMES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def small_head_cfg(num_classes=5, box_dim=16, mask_dim=8, mlp_mask=True, opts=()):
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        [
            "MODEL.ROI_BOX_HEAD.NUM_CLASSES", num_classes,
            "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", box_dim,
            "MODEL.ROI_MASK_HEAD.CONV_LAYERS", (mask_dim,) * 4,
            "MODEL.ROI_MASK_HEAD.RESOLUTION", 28,
            "MODEL.ROI_MASK_HEAD.USE_BBOX2MASK", True,
            "MODEL.ROI_MASK_HEAD.USE_MLPMASK", mlp_mask,
            *opts,
        ]
    )
    return cfg


# Scaled cosine classifier


def test_cosine_logits_equal_scale_times_cosine_similarity():
    torch.manual_seed(0)
    cfg = small_head_cfg(opts=["MODEL.ROI_BOX_HEAD.COSINE_SCALE", 7.5])
    predictor = FPNCosinePredictor(cfg, 16)
    x = torch.randn(6, 16)
    logits, _ = predictor(x)
    weight = predictor.cls_score.weight
    expected = 7.5 * F.cosine_similarity(x[:, None, :], weight[None, :, :], dim=2)
    assert logits.shape == (6, 5)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    assert logits.abs().max() <= 7.5 + 1e-5


def test_cosine_logits_ignore_the_norms_of_features_and_classifier_rows():
    torch.manual_seed(0)
    predictor = FPNCosinePredictor(small_head_cfg(), 16)
    x = torch.randn(6, 16)
    logits, _ = predictor(x)
    feature_scales = torch.rand(6, 1) * 100 + 0.01
    row_scales = torch.rand(5, 1) * 100 + 0.01
    with torch.no_grad():
        predictor.cls_score.weight.mul_(row_scales)
    rescaled_logits, _ = predictor(x * feature_scales)
    torch.testing.assert_close(rescaled_logits, logits, rtol=1e-4, atol=1e-5)


def test_cosine_predictor_layers_and_init():
    torch.manual_seed(0)
    predictor = FPNCosinePredictor(default_cfg, 1024)
    assert predictor.cls_score.bias is None
    assert predictor.cls_score.weight.shape == (81, 1024)
    assert predictor.bbox_pred.weight.shape == (81 * 4, 1024)
    assert predictor.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert predictor.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.02)
    assert torch.all(predictor.bbox_pred.bias == 0)

    cfg = default_cfg.clone()
    cfg.MODEL.CLS_AGNOSTIC_BBOX_REG = True
    scores, deltas = FPNCosinePredictor(cfg, 64)(torch.randn(3, 64, 1, 1))
    assert scores.shape == (3, 81) and deltas.shape == (3, 8)


def test_box_regression_sees_rectified_features():
    torch.manual_seed(0)
    predictor = FPNCosinePredictor(small_head_cfg(), 16)
    x = torch.randn(6, 16)
    _, deltas = predictor(x)
    bbox_pred = predictor.bbox_pred
    torch.testing.assert_close(deltas, F.linear(x.clamp(min=0), bbox_pred.weight, bbox_pred.bias))
    assert not torch.allclose(deltas, bbox_pred(x))


def test_learnable_scale_is_a_parameter_saved_as_scale_cls():
    predictor = FPNCosinePredictor(small_head_cfg(opts=["MODEL.ROI_BOX_HEAD.COSINE_SCALE", 12.0]), 16)
    parameters = dict(predictor.named_parameters())
    assert parameters["scale_cls"].requires_grad and parameters["scale_cls"].shape == (1,)
    assert predictor.state_dict()["scale_cls"].item() == 12.0

    logits, _ = predictor(torch.randn(4, 16))
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert predictor.scale_cls.grad is not None and predictor.scale_cls.grad.abs().item() > 0


def test_fixed_scale_is_a_buffer_saved_as_scale_cls():
    opts = ["MODEL.ROI_BOX_HEAD.COSINE_SCALE_LEARNABLE", False, "MODEL.ROI_BOX_HEAD.COSINE_SCALE", 3.0]
    predictor = FPNCosinePredictor(small_head_cfg(opts=opts), 16)
    assert "scale_cls" not in dict(predictor.named_parameters())
    assert "scale_cls" in dict(predictor.named_buffers())
    assert predictor.state_dict()["scale_cls"].tolist() == [3.0]


def test_cosine_heads_are_registered():
    assert registry.ROI_BOX_FEATURE_EXTRACTORS["FPN2MLPCosineFeatureExtractor"] is FPN2MLPCosineFeatureExtractor
    assert registry.ROI_BOX_PREDICTOR["FPNCosinePredictor"] is FPNCosinePredictor


# Box feature extractor without the last ReLU


def test_cosine_extractor_is_the_fpn_extractor_without_the_fc7_relu():
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        [
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
            "MODEL.ROI_BOX_HEAD.POOLER_SCALES", (0.25,),
            "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 2,
            "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", 32,
        ]
    )
    torch.manual_seed(0)
    cosine_extractor = FPN2MLPCosineFeatureExtractor(cfg, 8)
    plain_extractor = FPN2MLPFeatureExtractor(cfg, 8)
    assert set(cosine_extractor.state_dict()) == set(plain_extractor.state_dict())
    plain_extractor.load_state_dict(cosine_extractor.state_dict())

    features = [torch.randn(1, 8, 16, 16)]
    boxes = [BoxList(torch.tensor([[0.0, 0.0, 40.0, 40.0], [8.0, 4.0, 60.0, 30.0]]), (64, 64))]
    cosine_out = cosine_extractor(features, boxes)
    assert cosine_out.shape == (2, 32)
    assert cosine_out.min() < 0
    torch.testing.assert_close(F.relu(cosine_out), plain_extractor(features, boxes))


# Weight transfer and the Mask^X predictor


def test_transfer_function_layout_matches_the_authors_checkpoint():
    bbox2mask = build_bbox2mask(default_cfg)
    shapes = {k: tuple(v.shape) for k, v in bbox2mask.state_dict().items()}
    assert shapes == {"0.weight": (1024, 1024), "0.bias": (1024,), "2.weight": (256, 1024), "2.bias": (256,)}
    # Parameter count of the authors' roi_heads.bbox2mask: 1024 * 1024 + 1024 + 1024 * 256 + 256.
    assert sum(p.numel() for p in bbox2mask.parameters()) == 1312000
    weights = torch.randn(7, 1024)
    hidden = F.leaky_relu(F.linear(weights, bbox2mask[0].weight, bbox2mask[0].bias), 0.01)
    expected = F.leaky_relu(F.linear(hidden, bbox2mask[2].weight, bbox2mask[2].bias), 0.01)
    torch.testing.assert_close(bbox2mask(weights), expected)


@pytest.mark.parametrize("mlp_mask", [True, False])
def test_maskx_predictor_is_a_1x1_conv_with_transferred_weights(mlp_mask):
    torch.manual_seed(0)
    cfg = small_head_cfg(mlp_mask=mlp_mask)
    predictor = MaskXRCNNC4Predictor(cfg, 8)
    bbox2mask = build_bbox2mask(cfg)
    classifier_weight = torch.randn(5, 16)
    x = torch.randn(3, 8, 14, 14)

    class_weights = bbox2mask(classifier_weight)
    logits = predictor(x, class_weights)

    assert logits.shape == (3, 5, 28, 28)
    deconv = predictor.conv5_mask
    upsampled = F.relu(F.conv_transpose2d(x, deconv.weight, deconv.bias, stride=2))
    expected = F.conv2d(upsampled, class_weights.view(5, 8, 1, 1))
    if mlp_mask:
        mlp = predictor.MLP_mask
        agnostic = F.linear(upsampled.reshape(3, -1), mlp.weight, mlp.bias).view(3, 1, 28, 28)
        expected = expected + agnostic
        assert mlp.weight.shape == (28 * 28, 8 * 28 * 28)
        assert "MLP_mask.weight" in predictor.state_dict()
    else:
        assert not any(k.startswith("MLP_mask") for k in predictor.state_dict())
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mlp_mask", [True, False])
def test_maskx_predictor_given_labels_computes_only_each_rois_class_channel(mlp_mask):
    torch.manual_seed(0)
    cfg = small_head_cfg(mlp_mask=mlp_mask)
    predictor = MaskXRCNNC4Predictor(cfg, 8)
    class_weights = build_bbox2mask(cfg)(torch.randn(5, 16))
    x = torch.randn(4, 8, 14, 14)
    labels = torch.tensor([3, 1, 3, 4])

    own = predictor(x, class_weights, labels)
    every_class = predictor(x, class_weights)
    assert own.shape == (4, 1, 28, 28)
    torch.testing.assert_close(own[:, 0], every_class[torch.arange(4), labels], rtol=1e-5, atol=1e-5)
    assert predictor(x[:0], class_weights, labels[:0]).shape == (0, 1, 28, 28)


def test_maskx_predictor_init():
    torch.manual_seed(0)
    predictor = MaskXRCNNC4Predictor(small_head_cfg(mask_dim=16), 16)
    # Kaiming normal, fan_out: out_features for the Linear, in_channels * k * k for the deconv.
    assert predictor.MLP_mask.weight.std().item() == pytest.approx((2.0 / 784) ** 0.5, rel=0.02)
    assert predictor.conv5_mask.weight.std().item() == pytest.approx((2.0 / (16 * 4)) ** 0.5, rel=0.05)
    assert torch.all(predictor.MLP_mask.bias == 0) and torch.all(predictor.conv5_mask.bias == 0)


def test_mask_loss_reaches_the_classifier_and_the_transfer_function():
    torch.manual_seed(0)
    cfg = small_head_cfg()
    box_predictor = FPNCosinePredictor(cfg, 16)
    bbox2mask = build_bbox2mask(cfg)
    mask_predictor = MaskXRCNNC4Predictor(cfg, 8)

    logits = mask_predictor(torch.randn(4, 8, 14, 14), bbox2mask(box_predictor.cls_score.weight))
    labels = torch.tensor([1, 2, 4, 2])
    targets = (torch.rand(4, 28, 28) > 0.5).float()
    F.binary_cross_entropy_with_logits(logits[torch.arange(4), labels], targets).backward()

    assert box_predictor.cls_score.weight.grad.abs().sum() > 0
    for name, parameter in bbox2mask.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for name, parameter in mask_predictor.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_bbox2mask_selects_the_maskx_predictor_and_logs_it(caplog):
    cfg = small_head_cfg(opts=["MODEL.ROI_MASK_HEAD.PREDICTOR", "MaskRCNNC4Predictor"])
    with caplog.at_level(logging.INFO):
        predictor = make_roi_mask_predictor(cfg, 8)
    assert isinstance(predictor, MaskXRCNNC4Predictor)
    assert "MaskXRCNNC4Predictor" in caplog.text

    cfg.merge_from_list(
        ["MODEL.ROI_MASK_HEAD.USE_BBOX2MASK", False, "MODEL.ROI_MASK_HEAD.USE_MLPMASK", False]
    )
    assert type(make_roi_mask_predictor(cfg, 8)) is MaskRCNNC4Predictor


def test_mlp_mask_without_weight_transfer_is_an_error():
    cfg = small_head_cfg(opts=["MODEL.ROI_MASK_HEAD.USE_BBOX2MASK", False])
    with pytest.raises(ValueError, match="USE_BBOX2MASK True"):
        make_roi_mask_predictor(cfg, 8)


def test_maskx_predictor_rejects_weights_of_the_wrong_width():
    predictor = MaskXRCNNC4Predictor(small_head_cfg(), 8)
    with pytest.raises(ValueError, match="CONV_LAYERS"):
        predictor(torch.randn(2, 8, 14, 14), torch.randn(5, 16))


# The tiny model with LST's heads


def load_lst_config(opts=()):
    cfg = default_cfg.clone()
    cfg.merge_from_file(LST_CONFIG)
    cfg.merge_from_list(list(opts))
    return cfg


def build_lst_model(opts=()):
    torch.manual_seed(0)
    return build_detection_model(load_lst_config(opts))


def unit_variance_images(sizes=((128, 160), (96, 128))):
    generator = torch.Generator().manual_seed(0)
    return to_image_list([torch.randn(3, h, w, generator=generator) for h, w in sizes], 32)


def synthetic_targets(image_sizes):
    """Two objects per image, with polygon masks, labels 2 and 5 (of 7 classes)."""
    targets = []
    for height, width in image_sizes:
        polygons = [
            [[10.0, 10.0, 60.0, 10.0, 60.0, 70.0, 10.0, 70.0]],
            [[70.0, 20.0, 120.0, 30.0, 90.0, 90.0]],
        ]
        boxes = torch.tensor([[10.0, 10.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0]])
        target = BoxList(boxes, (width, height))
        target.add_field("labels", torch.tensor([2, 5]))
        target.add_field("masks", SegmentationMask(polygons, (width, height)))
        targets.append(target)
    return targets


def test_lst_model_state_dict_has_the_authors_keys():
    cfg = load_lst_config()
    state_dict = build_lst_model().state_dict()
    box_dim = cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM
    mask_dim = cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1]
    num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    side = cfg.MODEL.ROI_MASK_HEAD.RESOLUTION
    shapes = {
        "roi_heads.bbox2mask.0.weight": (box_dim, box_dim),
        "roi_heads.bbox2mask.2.weight": (mask_dim, box_dim),
        "roi_heads.box.predictor.scale_cls": (1,),
        "roi_heads.box.predictor.cls_score.weight": (num_classes, box_dim),
        "roi_heads.box.feature_extractor.fc7.weight": (box_dim, box_dim),
        "roi_heads.mask.predictor.conv5_mask.weight": (mask_dim, mask_dim, 2, 2),
        "roi_heads.mask.predictor.MLP_mask.weight": (side * side, mask_dim * side * side),
    }
    for key, shape in shapes.items():
        assert tuple(state_dict[key].shape) == shape, key
    assert "roi_heads.box.predictor.cls_score.bias" not in state_dict
    assert not any("mask_fcn_logits" in key for key in state_dict)


def test_lst_model_training_step_gives_five_finite_losses_and_gradients_everywhere():
    model = build_lst_model().train()
    images = unit_variance_images()

    losses = model(images, synthetic_targets(images.image_sizes))

    assert set(losses) == LOSS_NAMES
    for name, loss in losses.items():
        assert loss.dim() == 0 and math.isfinite(loss.item()), name
    assert losses["loss_mask"].item() > 0
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_lst_model_inference_returns_masks():
    opts = ["MODEL.ROI_HEADS.SCORE_THRESH", 0.0]
    cfg = load_lst_config(opts)
    model = build_lst_model(opts).eval()
    images = unit_variance_images()
    with torch.no_grad():
        results = model(images)
    assert len(results) == 2
    for result, (height, width) in zip(results, images.image_sizes):
        assert result.size == (width, height)
        assert 0 < len(result) <= cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG
        mask = result.get_field("mask")
        side = cfg.MODEL.ROI_MASK_HEAD.RESOLUTION
        assert mask.shape == (len(result), 1, side, side)
        assert mask.min() >= 0 and mask.max() <= 1


def test_lst_model_mask_loss_trains_the_box_classifier():
    model = build_lst_model().train()
    images = unit_variance_images()
    losses = model(images, synthetic_targets(images.image_sizes))
    losses["loss_mask"].backward()
    assert model.roi_heads.box.predictor.cls_score.weight.grad.abs().sum() > 0
    assert model.roi_heads.bbox2mask[0].weight.grad.abs().sum() > 0
    assert model.roi_heads.box.predictor.bbox_pred.weight.grad is None
