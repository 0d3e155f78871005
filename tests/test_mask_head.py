"""Mask head: Detectron-style mask targets against pycocotools, the mask loss, mask selection,
and the Masker paste (a hand-computed golden case, torchvision's paste_masks_in_image and
F.interpolate)."""
import copy

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import paste_masks_in_image

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling.roi_heads.mask_head.inference import (
    Masker,
    MaskPostProcessor,
    make_roi_mask_post_processor,
    paste_mask_in_image,
)
from maskrcnn_benchmark.modeling.roi_heads.mask_head.loss import (
    make_roi_mask_loss_evaluator,
    project_masks_on_boxes,
)
from maskrcnn_benchmark.modeling.roi_heads.mask_head.mask_head import (
    build_roi_mask_head,
    keep_only_positive_boxes,
)
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask

WIDTH, HEIGHT = 200, 150
M = 28
POLYGONS = [
    [[20.0, 30.0, 90.0, 25.0, 110.0, 100.0, 40.0, 120.0]],
    [[120.0, 10.0, 190.0, 10.0, 190.0, 60.0], [130.0, 70.0, 180.0, 70.0, 160.0, 140.0]],
]
GT_BOXES = [[20.0, 25.0, 110.0, 120.0], [120.0, 10.0, 190.0, 140.0]]


def _reference_target(polygons, proposal, size):
    """Crop (float box, clamped as Detectron, width without +1), scale to size x size and
    rasterise with pycocotools."""
    x1, y1, x2, y2 = proposal
    x1 = min(max(x1, 0.0), WIDTH - 1)
    y1 = min(max(y1, 0.0), HEIGHT - 1)
    x2 = max(min(max(x2, 0.0), WIDTH), x1 + 1)
    y2 = max(min(max(y2, 0.0), HEIGHT), y1 + 1)
    scale_x, scale_y = size / (x2 - x1), size / (y2 - y1)
    scaled = []
    for polygon in polygons:
        p = np.array(polygon, dtype=np.float64)
        p[0::2] = (p[0::2] - x1) * scale_x
        p[1::2] = (p[1::2] - y1) * scale_y
        scaled.append(p)
    rle = mask_utils.merge(mask_utils.frPyObjects(scaled, size, size))
    return torch.from_numpy(mask_utils.decode(rle)).float()


def _targets():
    target = BoxList(torch.tensor(GT_BOXES), (WIDTH, HEIGHT))
    target.add_field("labels", torch.tensor([3, 5]))
    target.add_field("masks", SegmentationMask(POLYGONS, (WIDTH, HEIGHT)))
    return target


def test_mask_targets_match_pycocotools_rasterisation_of_the_cropped_polygons():
    proposals = [
        [25.3, 20.7, 105.9, 118.2],
        [-10.0, 15.5, 60.25, 80.0],  # partly outside the image
        [118.0, 5.0, 199.0, 149.0],
        [150.0, 60.0, 170.0, 75.0],
    ]
    instances = [0, 0, 1, 1]
    masks = SegmentationMask([POLYGONS[i] for i in instances], (WIDTH, HEIGHT))
    targets = project_masks_on_boxes(masks, BoxList(proposals, (WIDTH, HEIGHT)), M)

    assert targets.shape == (4, M, M) and targets.dtype == torch.float32
    for target, proposal, instance in zip(targets, proposals, instances):
        expected = _reference_target(POLYGONS[instance], proposal, M)
        assert expected.sum() > 0
        assert torch.equal(target, expected)


def test_mask_targets_of_no_proposal_are_empty():
    masks = SegmentationMask([], (WIDTH, HEIGHT))
    empty = BoxList(torch.zeros(0, 4), (WIDTH, HEIGHT))
    assert project_masks_on_boxes(masks, empty, M).numel() == 0


def test_mask_loss_is_bce_on_the_matched_class_channel_of_positive_proposals():
    generator = torch.Generator().manual_seed(0)
    cfg = default_cfg.clone()
    cfg.MODEL.ROI_MASK_HEAD.RESOLUTION = M
    loss_evaluator = make_roi_mask_loss_evaluator(cfg)
    boxes = [[22.0, 27.0, 108.0, 118.0], [5.0, 130.0, 15.0, 145.0], [121.0, 12.0, 188.0, 135.0]]
    proposals = BoxList(boxes, (WIDTH, HEIGHT))  # the second one matches nothing
    mask_logits = torch.randn(3, 6, M, M, generator=generator, requires_grad=True)

    loss = loss_evaluator([proposals], mask_logits, [_targets()])

    expected_targets = torch.stack(
        [_reference_target(POLYGONS[0], boxes[0], M), _reference_target(POLYGONS[1], boxes[2], M)]
    )
    expected = F.binary_cross_entropy_with_logits(mask_logits[[0, 2], [3, 5]], expected_targets)
    torch.testing.assert_close(loss, expected)

    # logits holding only each proposal's own-class channel (MaskXRCNNC4Predictor given labels)
    own_channel = mask_logits[[0, 1, 2], [3, 0, 5]][:, None]
    torch.testing.assert_close(loss_evaluator([proposals], own_channel, [_targets()]), expected)


def test_mask_loss_without_positives_is_zero_and_connected_to_the_graph():
    loss_evaluator = make_roi_mask_loss_evaluator(default_cfg)
    proposals = BoxList([[5.0, 130.0, 15.0, 145.0]], (WIDTH, HEIGHT))
    mask_logits = torch.randn(1, 6, 14, 14, requires_grad=True)
    loss = loss_evaluator([proposals], mask_logits, [_targets()])
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert torch.equal(mask_logits.grad, torch.zeros_like(mask_logits))


def test_keep_only_positive_boxes():
    boxes = BoxList(torch.rand(4, 4), (WIDTH, HEIGHT))
    boxes.add_field("labels", torch.tensor([0, 2, 0, 1]))
    positive_boxes, positive_inds = keep_only_positive_boxes([boxes])
    assert positive_boxes[0].get_field("labels").tolist() == [2, 1]
    assert positive_inds[0].tolist() == [False, True, False, True]


# Paste


def test_paste_golden_uniform_mask():
    # 2x2 ones, padded to 4x4; box [2, 2, 3, 3] grows by 4/2 to [1.5, 1.5, 3.5, 3.5], truncated
    # to [1, 1, 3, 3]; the 4x4 mask resized to 3x3 is outer([1/6, 1, 1/6]): only the centre
    # exceeds 0.5.
    pasted = paste_mask_in_image(torch.ones(2, 2), torch.tensor([2.0, 2.0, 3.0, 3.0]), 5, 6)
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[2, 2] = True
    assert pasted.dtype == torch.bool
    assert torch.equal(pasted, expected)


def test_paste_golden_truncation_and_clipping():
    # Box [0, 0, 5, 5] grows by 2 about 2.5 to [-2.5, -2.5, 7.5, 7.5], truncated to [-2, -2, 7, 7]:
    # 10x10 pixels. Along y the mask row [0, 1, 0, 0] resizes to [0, .1, .5, .9, .7, .3, 0, ...];
    # along x the row [0, 1, .6, 0] to [0, .1, .5, .9, .88, .72, .54, .3, .06, 0]. Their products
    # exceed 0.5 at local rows 3-4, columns 3-5, i.e. image rows 1-2, columns 1-3.
    mask = torch.tensor([[1.0, 0.6], [0.0, 0.0]])
    pasted = paste_mask_in_image(mask, torch.tensor([0.0, 0.0, 5.0, 5.0]), 8, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:3, 1:4] = True
    assert torch.equal(pasted, expected)


def test_masker_matches_torchvision_paste_thresholded():
    generator = torch.Generator().manual_seed(0)
    num_masks, im_h, im_w = 12, 90, 120
    masks = torch.rand(num_masks, 1, M, M, generator=generator)
    xy = torch.rand(num_masks, 2, generator=generator) * torch.tensor([im_w - 10.0, im_h - 10.0])
    wh = 3 + torch.rand(num_masks, 2, generator=generator) * 60
    boxes = torch.cat([xy, xy + wh], dim=1)  # some stick out at the right or bottom

    (pasted,) = Masker(threshold=0.5, padding=1)([masks], [BoxList(boxes, (im_w, im_h))])

    expected = paste_masks_in_image(masks, boxes, (im_h, im_w), padding=1) > 0.5
    assert pasted.shape == (num_masks, 1, im_h, im_w) and pasted.dtype == torch.bool
    assert torch.equal(pasted, expected)


def test_paste_of_a_square_mask_agrees_with_interpolate():
    mask = torch.zeros(M, M)
    mask[7:21, 7:21] = 1.0
    # x: 28 wide -> expanded 30 about 41.5 -> [26.5, 56.5] -> [26, 56]; y: [6.5, 36.5] -> [6, 36].
    box = torch.tensor([27.5, 7.5, 55.5, 35.5])
    pasted = paste_mask_in_image(mask, box, 50, 70)

    padded = F.pad(mask, (1, 1, 1, 1))[None, None]
    resized = F.interpolate(padded, size=(31, 31), mode="bilinear", align_corners=False)[0, 0] > 0.5
    expected = torch.zeros(50, 70, dtype=torch.bool)
    expected[6:37, 26:57] = resized
    assert torch.equal(pasted, expected)
    assert 14 * 14 <= pasted.sum() <= 16 * 16


def test_masker_of_no_detection_gives_empty_masks():
    (pasted,) = Masker()([torch.zeros(0, 1, M, M)], [BoxList(torch.zeros(0, 4), (30, 20))])
    assert pasted.shape == (0, 1, 20, 30) and pasted.dtype == torch.bool


def test_masker_rejects_mismatched_masks_and_boxes():
    with pytest.raises(ValueError, match="one to one"):
        Masker()([torch.zeros(2, 1, M, M)], [BoxList(torch.zeros(3, 4), (30, 20))])


# Post-processing


def _detections(labels, size=(WIDTH, HEIGHT)):
    boxes = BoxList(torch.tensor([[10.0, 10.0, 60.0, 50.0]] * len(labels)), size)
    boxes.add_field("labels", torch.tensor(labels))
    boxes.add_field("scores", torch.linspace(0.9, 0.5, len(labels)))
    return boxes


def test_mask_post_processor_selects_the_label_channel_per_detection():
    generator = torch.Generator().manual_seed(0)
    detections = [_detections([1, 4, 2]), _detections([3])]
    logits = torch.randn(4, 5, M, M, generator=generator)

    results = MaskPostProcessor()(logits, detections)

    probs = logits.sigmoid()
    torch.testing.assert_close(results[0].get_field("mask"), probs[[0, 1, 2], [1, 4, 2]][:, None])
    torch.testing.assert_close(results[1].get_field("mask"), probs[[3], [3]][:, None])
    for result, detection in zip(results, detections):
        assert torch.equal(result.get_field("scores"), detection.get_field("scores"))
        assert torch.equal(result.bbox, detection.bbox)

    own_channel = logits[[0, 1, 2, 3], [1, 4, 2, 3]][:, None]
    from_own = MaskPostProcessor()(own_channel, detections)
    for result, expected in zip(from_own, results):
        torch.testing.assert_close(result.get_field("mask"), expected.get_field("mask"))


def test_postprocess_masks_pastes_into_the_image():
    cfg = default_cfg.clone()
    cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS = True
    post_processor = make_roi_mask_post_processor(cfg)
    assert post_processor.masker.threshold == cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD
    (result,) = post_processor(torch.full((2, 3, M, M), 5.0), [_detections([1, 2])])
    mask = result.get_field("mask")
    assert mask.shape == (2, 1, HEIGHT, WIDTH) and mask.dtype == torch.bool
    probs = torch.full((2, 1, M, M), 5.0).sigmoid()
    boxes = _detections([1, 2]).bbox
    assert torch.equal(mask, paste_masks_in_image(probs, boxes, (HEIGHT, WIDTH), padding=1) > 0.5)
    # A confident full mask covers the inside of its box [10, 60] x [10, 50], nothing outside.
    assert mask[0, 0, 12:49, 12:59].all() and not mask[0, 0, :, :9].any()
    assert make_roi_mask_post_processor(default_cfg).masker is None


def test_mask_head_training_and_inference():
    torch.manual_seed(0)
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        [
            "MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR", "MaskRCNNFPNFeatureExtractor",
            "MODEL.ROI_MASK_HEAD.CONV_LAYERS", (8, 8),
            "MODEL.ROI_MASK_HEAD.RESOLUTION", M,
            "MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR", False,
            "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 6,
        ]
    )
    head = build_roi_mask_head(cfg, 4).train()
    features = [torch.randn(1, 4, 10, 13)]
    proposals = BoxList([[22.0, 27.0, 108.0, 118.0], [5.0, 5.0, 15.0, 15.0]], (WIDTH, HEIGHT))
    proposals.add_field("labels", torch.tensor([3, 0]))

    x, returned, losses = head(features, [proposals], [_targets()])

    assert returned[0] is proposals and set(losses) == {"loss_mask"}
    assert x.shape == (1, 8, 14, 14)  # the positive proposal only
    losses["loss_mask"].backward()
    assert head.predictor.mask_fcn_logits.weight.grad is not None

    head.eval()
    with torch.no_grad():
        _, results, losses = head(features, [_detections([1, 5])])
    assert losses == {} and results[0].get_field("mask").shape == (2, 1, M, M)


def test_mask_head_computing_only_the_own_class_channel_changes_no_loss_gradient_or_mask():
    """The predictor given the RoIs' labels (what the head does) against all NUM_CLASSES channels
    (a predictor without ``labels``, as one registered by a user)."""
    torch.manual_seed(0)
    cfg = default_cfg.clone()
    cfg.merge_from_list(["MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR", "MaskRCNNFPNFeatureExtractor",
                         "MODEL.ROI_MASK_HEAD.CONV_LAYERS", (8, 8), "MODEL.ROI_MASK_HEAD.RESOLUTION", M,
                         "MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR", False, "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 6])
    own_class = build_roi_mask_head(cfg, 4).train()
    all_classes = copy.deepcopy(own_class)
    all_classes._predictor_takes_labels = False
    features = [torch.randn(1, 4, 10, 13)]
    proposals = BoxList([[22.0, 27.0, 108.0, 118.0], [5.0, 5.0, 15.0, 15.0], [30.0, 20.0, 90.0, 100.0]],
                        (WIDTH, HEIGHT))
    proposals.add_field("labels", torch.tensor([3, 0, 3]))
    losses = [head(features, [proposals], [_targets()])[2]["loss_mask"] for head in (own_class, all_classes)]
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    for loss in losses:
        loss.backward()
    for (name, a), b in zip(own_class.named_parameters(), all_classes.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    with torch.no_grad():
        masks = [head.eval()(features, [_detections([1, 5, 2])])[1][0].get_field("mask")
                 for head in (own_class, all_classes)]
    assert masks[0].shape == (3, 1, M, M) and torch.allclose(masks[0], masks[1], atol=1e-6)
