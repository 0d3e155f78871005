"""Detectors: every upstream config builds (or fails with a clear "not supported" error), the
checkpoint key names of Mask R-CNN R-50-FPN equal upstream's, CPU inference returns one BoxList
per image, and a training step gives the five losses with gradients for every trainable
parameter."""
import glob
import math
import os

import pytest
import torch

from maskrcnn_benchmark.config import cfg as global_cfg, merge_config_file
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.roi_heads import build_roi_heads
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# As upstream's test: these folders hold configs that only differ in weights or datasets.
EXCLUDED_FOLDERS = ("caffe2", "quick_schedules", "pascal_voc", "cityscapes")
# Upstream features this fork does not build: building them must fail with NotImplementedError.
UNSUPPORTED_MARKERS = ("retinanet", "keypoint", "fbnet", "dcn")

CONFIG_FILES = sorted(
    rel_path
    for rel_path in (
        os.path.relpath(path, CONFIG_ROOT)
        for path in glob.glob(os.path.join(CONFIG_ROOT, "**", "*.yaml"), recursive=True)
    )
    if not set(rel_path.split(os.sep)) & set(EXCLUDED_FOLDERS)
)
SUPPORTED = [f for f in CONFIG_FILES if not any(m in f for m in UNSUPPORTED_MARKERS)]
UNSUPPORTED = [f for f in CONFIG_FILES if any(m in f for m in UNSUPPORTED_MARKERS)]

MASK_FPN = "e2e_mask_rcnn_R_50_FPN_1x.yaml"
MASK_C4 = "e2e_mask_rcnn_R_50_C4_1x.yaml"
LOSS_NAMES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def load_config(rel_path, opts=()):
    cfg = global_cfg.clone()
    merge_config_file(cfg, os.path.join(CONFIG_ROOT, rel_path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def build(rel_path, opts=()):
    torch.manual_seed(0)
    return build_detection_model(load_config(rel_path, opts))


def random_images(cfg, sizes=((224, 268), (200, 240))):
    """Images of the given (height, width) with values like a BGR x255, mean-subtracted input."""
    generator = torch.Generator().manual_seed(0)
    images = [128 * torch.randn(3, h, w, generator=generator) for h, w in sizes]
    return to_image_list(images, cfg.DATALOADER.SIZE_DIVISIBILITY)


def test_config_lists_are_not_empty():
    assert {MASK_FPN, MASK_C4} <= set(SUPPORTED)
    assert any("retinanet" in f for f in UNSUPPORTED) and any("fbnet" in f for f in UNSUPPORTED)


@pytest.mark.parametrize("config_file", SUPPORTED)
def test_supported_config_builds(config_file):
    model = build(config_file)
    assert isinstance(model, torch.nn.Module)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("config_file", UNSUPPORTED)
def test_unsupported_config_fails_clearly(config_file):
    with pytest.raises(NotImplementedError, match="not supported in this fork"):
        build(config_file)


def test_keypoint_heads_are_rejected_by_build_roi_heads():
    cfg = load_config(MASK_FPN, ["MODEL.KEYPOINT_ON", True])
    with pytest.raises(NotImplementedError, match="set MODEL.KEYPOINT_ON False"):
        build_roi_heads(cfg, 256)


def test_unknown_meta_architecture_lists_the_known_ones():
    cfg = load_config(MASK_FPN, ["MODEL.META_ARCHITECTURE", "CascadeRCNN"])
    with pytest.raises(KeyError, match="GeneralizedRCNN"):
        build_detection_model(cfg)


# Checkpoint key names (upstream maskrcnn-benchmark module names)


def _frozen_bn(prefix):
    return [prefix + name for name in ("weight", "bias", "running_mean", "running_var")]


def _weight_and_bias(prefix):
    return [prefix + ".weight", prefix + ".bias"]


def upstream_mask_rcnn_r50_fpn_keys():
    keys = ["backbone.body.stem.conv1.weight"] + _frozen_bn("backbone.body.stem.bn1.")
    for stage, num_blocks in enumerate((3, 4, 6, 3), 1):
        for block in range(num_blocks):
            prefix = "backbone.body.layer{}.{}.".format(stage, block)
            for i in (1, 2, 3):
                keys.append(prefix + "conv{}.weight".format(i))
                keys += _frozen_bn(prefix + "bn{}.".format(i))
            if block == 0:
                keys += [prefix + "downsample.0.weight"] + _frozen_bn(prefix + "downsample.1.")
    for i in (1, 2, 3, 4):
        keys += _weight_and_bias("backbone.fpn.fpn_inner{}".format(i))
        keys += _weight_and_bias("backbone.fpn.fpn_layer{}".format(i))
    keys += ["rpn.anchor_generator.cell_anchors.{}".format(i) for i in range(5)]
    for name in ("conv", "cls_logits", "bbox_pred"):
        keys += _weight_and_bias("rpn.head." + name)
    for name in ("fc6", "fc7"):
        keys += _weight_and_bias("roi_heads.box.feature_extractor." + name)
    for name in ("cls_score", "bbox_pred"):
        keys += _weight_and_bias("roi_heads.box.predictor." + name)
    for i in (1, 2, 3, 4):
        keys += _weight_and_bias("roi_heads.mask.feature_extractor.mask_fcn{}".format(i))
    for name in ("conv5_mask", "mask_fcn_logits"):
        keys += _weight_and_bias("roi_heads.mask.predictor." + name)
    return keys


def test_mask_rcnn_r50_fpn_state_dict_keys_equal_upstream():
    state_dict = build(MASK_FPN).state_dict()
    expected = upstream_mask_rcnn_r50_fpn_keys()
    assert len(expected) == len(set(expected)) == 312
    assert set(state_dict) == set(expected)
    shapes = {
        "roi_heads.box.feature_extractor.fc6.weight": (1024, 256 * 7 * 7),
        "roi_heads.box.predictor.cls_score.weight": (81, 1024),
        "roi_heads.box.predictor.bbox_pred.weight": (81 * 4, 1024),
        "roi_heads.mask.feature_extractor.mask_fcn1.weight": (256, 256, 3, 3),
        "roi_heads.mask.predictor.conv5_mask.weight": (256, 256, 2, 2),
        "roi_heads.mask.predictor.mask_fcn_logits.weight": (81, 256, 1, 1),
        "rpn.head.cls_logits.weight": (3, 256, 1, 1),
        "rpn.anchor_generator.cell_anchors.0": (3, 4),
        "backbone.fpn.fpn_inner4.weight": (256, 2048, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(state_dict[key].shape) == shape, key


def test_c4_mask_head_shares_the_box_feature_extractor():
    model = build(MASK_C4)
    assert model.roi_heads.mask.feature_extractor is model.roi_heads.box.feature_extractor
    state_dict = model.state_dict()
    key = "feature_extractor.head.layer4.0.conv1.weight"
    box_weight = state_dict["roi_heads.box." + key]
    assert box_weight.data_ptr() == state_dict["roi_heads.mask." + key].data_ptr()


# Inference (upstream's test_run_selected_detectors, on small inputs)

TEN_PROPOSALS = ["MODEL.RPN.POST_NMS_TOP_N_TEST", 10, "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", 10]
INFERENCE_OPTS = TEN_PROPOSALS + [
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", 20,
    # Random weights give near-uniform class scores: a zero threshold keeps detections.
    "MODEL.ROI_HEADS.SCORE_THRESH", 0.0,
]


@pytest.mark.parametrize(
    "config_file, has_masks",
    [
        ("e2e_faster_rcnn_R_50_C4_1x.yaml", False),
        ("e2e_faster_rcnn_R_50_FPN_1x.yaml", False),
        (MASK_FPN, True),
        (MASK_C4, True),
    ],
)
def test_inference_returns_detections_per_image(config_file, has_masks):
    cfg = load_config(config_file, INFERENCE_OPTS)
    model = build(config_file, INFERENCE_OPTS).eval()
    images = random_images(cfg)
    with torch.no_grad():
        results = model(images)

    assert len(results) == len(images.image_sizes)
    resolution = cfg.MODEL.ROI_MASK_HEAD.RESOLUTION
    for result, (height, width) in zip(results, images.image_sizes):
        assert isinstance(result, BoxList) and result.size == (width, height)
        assert 0 < len(result) <= cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG
        labels = result.get_field("labels")
        assert labels.min() >= 1 and labels.max() < cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
        assert torch.all(labels[1:] >= labels[:-1])  # grouped by class
        assert result.get_field("scores").shape == (len(result),)
        assert result.bbox[:, [0, 2]].max() <= width - 1
        assert result.bbox[:, [1, 3]].max() <= height - 1
        if has_masks:
            mask = result.get_field("mask")
            assert mask.shape == (len(result), 1, resolution, resolution)
            assert mask.min() >= 0 and mask.max() <= 1
        else:
            assert not result.has_field("mask")


def test_inference_without_detections_still_runs_the_mask_head():
    opts = INFERENCE_OPTS + ["MODEL.ROI_HEADS.SCORE_THRESH", 1.0]  # nothing passes
    cfg = load_config(MASK_FPN, opts)
    model = build(MASK_FPN, opts).eval()
    with torch.no_grad():
        results = model(random_images(cfg))
    assert [len(r) for r in results] == [0, 0]
    assert all(r.get_field("mask").shape == (0, 1, 28, 28) for r in results)


def test_rpn_only_inference_returns_sorted_proposals():
    config_file = "rpn_R_50_FPN_1x.yaml"
    cfg = load_config(config_file, TEN_PROPOSALS)
    model = build(config_file, TEN_PROPOSALS).eval()
    with torch.no_grad():
        results = model(random_images(cfg))
    assert [len(r) for r in results] == [10, 10]
    for result in results:
        objectness = result.get_field("objectness")
        assert torch.all(objectness[:-1] >= objectness[1:])


# Training

TRAIN_OPTS = [
    "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", 200,
    "MODEL.RPN.POST_NMS_TOP_N_TRAIN", 100,
    "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", 100,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
]


def synthetic_targets(image_sizes):
    """Two objects per image, with polygon masks, labels 3 and 7."""
    targets = []
    for height, width in image_sizes:
        polygons = [
            [[10.0, 20.0, 100.0, 20.0, 100.0, 120.0, 10.0, 120.0]],
            [[120.0, 60.0, 190.0, 70.0, 150.0, 180.0], [130.0, 40.0, 160.0, 40.0, 150.0, 55.0]],
        ]
        boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [120.0, 40.0, 190.0, 180.0]])
        target = BoxList(boxes, (width, height))
        target.add_field("labels", torch.tensor([3, 7]))
        target.add_field("masks", SegmentationMask(polygons, (width, height)))
        targets.append(target)
    return targets


@pytest.mark.parametrize("config_file", [MASK_FPN, MASK_C4])
def test_training_step_gives_five_finite_losses_and_gradients_everywhere(config_file):
    cfg = load_config(config_file, TRAIN_OPTS)
    model = build(config_file, TRAIN_OPTS).train()
    images = random_images(cfg)

    losses = model(images, synthetic_targets(images.image_sizes))

    assert set(losses) == LOSS_NAMES
    for name, loss in losses.items():
        assert loss.dim() == 0 and math.isfinite(loss.item()), name
    assert losses["loss_mask"].item() > 0 and losses["loss_box_reg"].item() > 0
    sum(losses.values()).backward()

    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    # FREEZE_CONV_BODY_AT 2 (the default) freezes the stem and res2 (layer1), and nothing else.
    frozen = {n.split(".")[2] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "layer1"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mask_rcnn_runs_on_cuda():
    cfg = load_config(MASK_FPN, INFERENCE_OPTS + TRAIN_OPTS + ["MODEL.DEVICE", "cuda"])
    torch.manual_seed(0)
    model = build_detection_model(cfg).to(cfg.MODEL.DEVICE)
    images = random_images(cfg).to(cfg.MODEL.DEVICE)
    targets = [t.to(cfg.MODEL.DEVICE) for t in synthetic_targets(images.image_sizes)]

    losses = model.train()(images, targets)
    assert set(losses) == LOSS_NAMES and all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    with torch.no_grad():
        results = model.eval()(images)
    assert len(results) == 2 and all(r.get_field("mask").is_cuda for r in results)


def test_training_without_targets_is_an_error():
    model = build(MASK_FPN).train()
    with pytest.raises(ValueError, match="targets should be passed"):
        model(random_images(load_config(MASK_FPN)))


@pytest.mark.parametrize("wrap_saved", [False, True])
def test_checkpoint_round_trip_gives_the_same_detections(tmp_path, wrap_saved):
    """Save a detector (optionally as DistributedDataParallel would: "module." keys), load it into a
    freshly built one, and get identical detections."""
    from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer

    cfg = load_config("tests/e2e_mask_rcnn_R_18_FPN_tiny_cpu.yaml")
    torch.manual_seed(0)
    model = build_detection_model(cfg).eval()
    saved = torch.nn.Sequential(model) if wrap_saved else model  # nn.Sequential prefixes "0.", like "module."
    state = {("module." + k[2:] if wrap_saved else k): v for k, v in saved.state_dict().items()}
    torch.save({"model": state}, tmp_path / "model.pth")

    torch.manual_seed(1)
    fresh = build_detection_model(cfg).eval()
    DetectronCheckpointer(cfg, fresh, save_dir=str(tmp_path / "run")).load(str(tmp_path / "model.pth"))
    images = random_images(cfg, sizes=((128, 160), (96, 128)))
    with torch.no_grad():
        expected, got = model(images), fresh(images)
    assert sum(len(detections) for detections in expected) > 0
    for a, b in zip(expected, got):
        torch.testing.assert_close(a.bbox, b.bbox)
        torch.testing.assert_close(a.get_field("scores"), b.get_field("scores"))
        torch.testing.assert_close(a.get_field("mask"), b.get_field("mask"))
