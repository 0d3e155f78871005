"""Box head: post-processing (per-class NMS, class-grouped output, kthvalue limit with ties,
score threshold) and the Fast R-CNN loss, against torchvision's nms / box_iou / BoxCoder on
+1-shifted boxes (maskrcnn-benchmark's inclusive-pixel convention)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.ops import box_iou, nms

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling.box_coder import BoxCoder
from maskrcnn_benchmark.modeling.roi_heads.box_head.box_head import build_roi_box_head
from maskrcnn_benchmark.modeling.roi_heads.box_head.inference import PostProcessor
from maskrcnn_benchmark.modeling.roi_heads.box_head.loss import make_roi_box_loss_evaluator
from maskrcnn_benchmark.structures.bounding_box import BoxList

PLUS_ONE = torch.tensor([0.0, 0.0, 1.0, 1.0])
WIDTH, HEIGHT = 200, 150


def _random_boxes(n, generator, min_size=4.0, max_size=80.0):
    """(n, 4) xyxy boxes fully inside the WIDTH x HEIGHT image."""
    wh = min_size + (max_size - min_size) * torch.rand(n, 2, generator=generator)
    x1 = (WIDTH - 1 - wh[:, 0]) * torch.rand(n, generator=generator)
    y1 = (HEIGHT - 1 - wh[:, 1]) * torch.rand(n, generator=generator)
    return torch.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], dim=1)


def _spread_boxes(n):
    """n disjoint 10x10 boxes in a row."""
    x1 = torch.arange(n, dtype=torch.float32) * 20
    return torch.stack([x1, torch.zeros(n), x1 + 9, torch.full((n,), 9.0)], dim=1)


def _logits_for(probabilities):
    """Logits whose softmax is ``probabilities`` (rows summing to 1)."""
    return torch.log(torch.as_tensor(probabilities, dtype=torch.float32))


# Post-processing


def test_detections_are_per_class_nms_of_thresholded_scores_grouped_by_class():
    generator = torch.Generator().manual_seed(0)
    num_rois, num_classes = 60, 5
    proposals = _random_boxes(num_rois, generator)
    logits = 3 * torch.randn(num_rois, num_classes, generator=generator)
    deltas = torch.zeros(num_rois, 4 * num_classes)  # decoded boxes = proposals
    post_processor = PostProcessor(score_thresh=0.05, nms=0.5, detections_per_img=1000)

    (result,) = post_processor((logits, deltas), [BoxList(proposals, (WIDTH, HEIGHT))])

    probs = F.softmax(logits, -1)
    expected_boxes, expected_scores, expected_labels = [], [], []
    for j in range(1, num_classes):
        inds = torch.nonzero(probs[:, j] > 0.05).squeeze(1)
        keep = nms(proposals[inds] + PLUS_ONE, probs[inds, j], 0.5).sort().values
        expected_boxes.append(proposals[inds][keep])
        expected_scores.append(probs[inds, j][keep])
        expected_labels.append(torch.full((len(keep),), j, dtype=torch.int64))
    assert sum(len(b) for b in expected_boxes) > num_classes  # several detections per class
    assert any(len(b) < (probs[:, j] > 0.05).sum() for j, b in enumerate(expected_boxes, 1))
    torch.testing.assert_close(result.bbox, torch.cat(expected_boxes))
    torch.testing.assert_close(result.get_field("scores"), torch.cat(expected_scores))
    assert torch.equal(result.get_field("labels"), torch.cat(expected_labels))
    assert set(result.fields()) == {"scores", "labels"}
    assert result.size == (WIDTH, HEIGHT) and result.mode == "xyxy"


def test_detection_limit_keeps_ties_at_the_kth_score():
    scores = [0.9, 0.8, 0.7, 0.7, 0.7, 0.6]
    probabilities = [[1 - s, s] for s in scores]
    boxes = BoxList(_spread_boxes(len(scores)), (WIDTH, HEIGHT))
    post_processor = PostProcessor(score_thresh=0.05, nms=0.5, detections_per_img=3)

    (result,) = post_processor((_logits_for(probabilities), torch.zeros(6, 8)), [boxes])

    # The 3rd best score is 0.7, shared by three boxes: all of them stay, 5 > 3 detections.
    assert len(result) == 5
    torch.testing.assert_close(result.bbox, boxes.bbox[:5])


def test_detection_limit_without_ties_keeps_exactly_the_best_in_class_order():
    # Class 1 scores boxes 0-2, class 2 scores boxes 3-5; the output stays grouped by class.
    probabilities = [
        [0.1, 0.3, 0.6],
        [0.1, 0.85, 0.05],
        [0.1, 0.5, 0.4],
        [0.1, 0.04, 0.86],
        [0.3, 0.0, 0.7],
        [0.1, 0.1, 0.8],
    ]
    boxes = BoxList(_spread_boxes(6), (WIDTH, HEIGHT))
    post_processor = PostProcessor(score_thresh=0.05, nms=0.5, detections_per_img=4)

    (result,) = post_processor((_logits_for(probabilities), torch.zeros(6, 12)), [boxes])

    # Before the limit: class 1 -> boxes 0, 1, 2, 5 (0.3, 0.85, 0.5, 0.1);
    # class 2 -> boxes 0, 2, 3, 4, 5 (0.6, 0.4, 0.86, 0.7, 0.8). Best 4: 0.86, 0.85, 0.8, 0.7.
    assert result.get_field("labels").tolist() == [1, 2, 2, 2]
    torch.testing.assert_close(result.bbox, boxes.bbox[[1, 3, 4, 5]])
    torch.testing.assert_close(result.get_field("scores"), torch.tensor([0.85, 0.86, 0.7, 0.8]))


@pytest.mark.parametrize("detections_per_img", [0, 7])
def test_per_class_limit_keeps_each_class_best_after_nms(detections_per_img):
    """DETECTIONS_PER_CLASS: the k best of each class after NMS (ties by candidate order), then
    the per-image limit on what remains; 0 disables the per-image limit."""
    generator = torch.Generator().manual_seed(3)
    num_rois, num_classes, k = 80, 6, 3
    proposals = _random_boxes(num_rois, generator)
    logits = 2 * torch.randn(num_rois, num_classes, generator=generator)
    logits[:10] = logits[10:20]  # tied scores across RoIs
    deltas = torch.zeros(num_rois, 4 * num_classes)
    post_processor = PostProcessor(score_thresh=0.05, nms=0.5,
                                   detections_per_img=detections_per_img, detections_per_class=k)

    (result,) = post_processor((logits, deltas), [BoxList(proposals, (WIDTH, HEIGHT))])

    probs = F.softmax(logits, -1)
    boxes, scores, labels = [], [], []
    for j in range(1, num_classes):
        inds = torch.nonzero(probs[:, j] > 0.05).squeeze(1)
        keep = nms(proposals[inds] + PLUS_ONE, probs[inds, j], 0.5).sort().values
        ranked = sorted(keep.tolist(), key=lambda i: -probs[inds[i], j].item())[:k]
        kept = inds[sorted(ranked)]
        boxes.append(proposals[kept])
        scores.append(probs[kept, j])
        labels.append(torch.full((len(kept),), j, dtype=torch.int64))
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    assert len(scores) == k * (num_classes - 1)  # every class reached the limit
    if detections_per_img:
        threshold = scores.sort(descending=True).values[detections_per_img - 1]
        best = scores >= threshold
        boxes, scores, labels = boxes[best], scores[best], labels[best]
    torch.testing.assert_close(result.bbox, boxes)
    torch.testing.assert_close(result.get_field("scores"), scores)
    assert torch.equal(result.get_field("labels"), labels)


def test_score_threshold_is_strict():
    post_processor = PostProcessor(score_thresh=0.25, nms=0.5, detections_per_img=100)
    scores = torch.tensor([[0.0, 0.25], [0.0, 0.2500001], [0.0, 0.5], [0.0, 0.1]])
    boxes = _spread_boxes(4).repeat(1, 2)
    boxlist = post_processor.prepare_boxlist(boxes, scores, (WIDTH, HEIGHT))

    result = post_processor.filter_results(boxlist, num_classes=2)

    torch.testing.assert_close(result.bbox, _spread_boxes(4)[[1, 2]])
    torch.testing.assert_close(result.get_field("scores"), scores[[1, 2], 1])


def test_boxes_are_decoded_with_plus_one_convention_and_clipped():
    proposals = torch.tensor([[10.0, 20.0, 60.0, 70.0], [150.0, 100.0, 190.0, 140.0]])
    deltas = torch.tensor(
        [[0.0] * 4 + [1.0, -2.0, 1.5, 0.5], [0.0] * 4 + [3.0, 3.0, 2.0, 2.0]]
    )  # class 1 deltas; the second pushes past the bottom-right corner
    logits = _logits_for([[0.1, 0.9], [0.2, 0.8]])
    post_processor = PostProcessor(detections_per_img=100)
    (result,) = post_processor((logits, deltas), [BoxList(proposals, (WIDTH, HEIGHT))])

    reference = TorchvisionBoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    expected = reference.decode_single(deltas[:, 4:], proposals + PLUS_ONE) - PLUS_ONE
    expected[:, 0::2] = expected[:, 0::2].clamp(0, WIDTH - 1)
    expected[:, 1::2] = expected[:, 1::2].clamp(0, HEIGHT - 1)
    assert expected[1, 2] == WIDTH - 1 and expected[1, 3] == HEIGHT - 1
    torch.testing.assert_close(result.bbox, expected)


def test_class_agnostic_regression_applies_the_foreground_deltas_to_every_class():
    proposals = torch.tensor([[10.0, 20.0, 60.0, 70.0]])
    deltas = torch.tensor([[5.0, 5.0, 5.0, 5.0, 1.0, -1.0, 0.5, 0.2]])
    logits = _logits_for([[0.1, 0.45, 0.45]])
    post_processor = PostProcessor(nms=0.5, detections_per_img=100, cls_agnostic_bbox_reg=True)

    (result,) = post_processor((logits, deltas), [BoxList(proposals, (WIDTH, HEIGHT))])

    expected = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(deltas[:, 4:], proposals)
    assert result.get_field("labels").tolist() == [1, 2]
    torch.testing.assert_close(result.bbox, expected.repeat(2, 1))


def test_no_detection_gives_an_empty_boxlist_per_image():
    boxes = [BoxList(_spread_boxes(3), (WIDTH, HEIGHT)), BoxList(_spread_boxes(2), (WIDTH, HEIGHT))]
    logits = _logits_for([[0.98, 0.01, 0.01]] * 5)
    results = PostProcessor()((logits, torch.zeros(5, 12)), boxes)
    assert [len(r) for r in results] == [0, 0]
    assert all(set(r.fields()) == {"scores", "labels"} for r in results)


# Fast R-CNN loss


def _loss_inputs(generator):
    proposals, targets = [], []
    for num_gt in (3, 2):
        gt = _random_boxes(num_gt, generator, min_size=30.0)
        near_gt = gt.repeat(4, 1)
        near_gt = (near_gt + 6 * torch.randn(near_gt.shape, generator=generator)).clamp(min=0)
        boxes = torch.cat([_random_boxes(30, generator), near_gt, gt])
        proposals.append(BoxList(boxes, (WIDTH, HEIGHT)))
        target = BoxList(gt, (WIDTH, HEIGHT))
        target.add_field("labels", torch.randint(1, 6, (num_gt,), generator=generator))
        targets.append(target)
    return proposals, targets


def _reference_labels_and_targets(proposals, targets):
    labels, regression_targets = [], []
    coder = TorchvisionBoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    for proposal, target in zip(proposals, targets):
        iou = box_iou(target.bbox + PLUS_ONE, proposal.bbox + PLUS_ONE)
        best_iou, best_gt = iou.max(dim=0)
        label = target.get_field("labels")[best_gt].clone()
        label[best_iou < 0.5] = 0
        labels.append(label)
        regression_targets.append(
            coder.encode_single(target.bbox[best_gt] + PLUS_ONE, proposal.bbox + PLUS_ONE)
        )
    return torch.cat(labels), torch.cat(regression_targets)


@pytest.mark.parametrize("cls_agnostic", [False, True])
def test_fast_rcnn_loss_matches_an_independent_computation(cls_agnostic):
    generator = torch.Generator().manual_seed(1)
    cfg = default_cfg.clone()
    cfg.MODEL.CLS_AGNOSTIC_BBOX_REG = cls_agnostic
    loss_evaluator = make_roi_box_loss_evaluator(cfg)
    proposals, targets = _loss_inputs(generator)

    # Fewer proposals than the 512-RoI sample with <= 128 positives: every proposal is sampled,
    # in its original order.
    sampled = loss_evaluator.subsample(proposals, targets)
    assert [len(s) for s in sampled] == [len(p) for p in proposals]
    assert loss_evaluator._proposals is sampled
    num_rois = sum(len(p) for p in proposals)
    num_classes = 6
    num_reg = 2 if cls_agnostic else num_classes
    class_logits = torch.randn(num_rois, num_classes, generator=generator)
    box_regression = torch.randn(num_rois, 4 * num_reg, generator=generator)

    loss_classifier, loss_box_reg = loss_evaluator([class_logits], [box_regression])

    labels, regression_targets = _reference_labels_and_targets(proposals, targets)
    assert 0 < (labels > 0).sum() < num_rois
    pos = labels > 0
    deltas = box_regression.view(num_rois, num_reg, 4)
    pos_deltas = deltas[pos, 1] if cls_agnostic else deltas[pos, labels[pos]]
    expected_box = F.smooth_l1_loss(pos_deltas, regression_targets[pos], beta=1.0, reduction="sum")
    torch.testing.assert_close(loss_classifier, F.cross_entropy(class_logits, labels))
    torch.testing.assert_close(loss_box_reg, expected_box / num_rois)
    assert torch.equal(torch.cat([s.get_field("labels") for s in sampled]), labels)


def test_subsample_respects_batch_size_and_positive_fraction():
    generator = torch.Generator().manual_seed(2)
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 8, "MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.25]
    )
    loss_evaluator = make_roi_box_loss_evaluator(cfg)
    proposals, targets = _loss_inputs(generator)
    sampled = loss_evaluator.subsample(proposals, targets)
    for image_rois in sampled:
        labels = image_rois.get_field("labels")
        assert len(image_rois) == 8
        assert (labels > 0).sum() == 2 and (labels == 0).sum() == 6
        assert image_rois.has_field("regression_targets")


def test_loss_before_subsample_is_an_error():
    loss_evaluator = make_roi_box_loss_evaluator(default_cfg)
    with pytest.raises(RuntimeError, match="subsample"):
        loss_evaluator([torch.zeros(1, 81)], [torch.zeros(1, 324)])


def test_box_head_training_returns_sampled_proposals_and_two_losses():
    torch.manual_seed(0)
    cfg = default_cfg.clone()
    cfg.merge_from_list(
        [
            "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPN2MLPFeatureExtractor",
            "MODEL.ROI_BOX_HEAD.PREDICTOR", "FPNPredictor",
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
            "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", 32,
            "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 6,
        ]
    )
    head = build_roi_box_head(cfg, 8).train()
    proposals, targets = _loss_inputs(torch.Generator().manual_seed(3))
    features = [torch.randn(2, 8, math.ceil(HEIGHT / 16), math.ceil(WIDTH / 16))]

    x, sampled, losses = head(features, proposals, targets)

    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert x.shape == (sum(len(s) for s in sampled), 32)
    assert sampled is head.loss_evaluator._proposals
    sum(losses.values()).backward()
    assert head.predictor.cls_score.weight.grad is not None

    head.eval()
    with torch.no_grad():
        _, detections, losses = head(features, proposals)
    assert losses == {} and len(detections) == 2
