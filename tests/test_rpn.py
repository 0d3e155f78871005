"""RPN: head shapes (upstream test), proposal selection, losses against an independent
computation (torchvision box_iou / BoxCoder), and the module end to end."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.ops import box_iou

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.modeling.box_coder import BoxCoder
from maskrcnn_benchmark.modeling.rpn.anchor_generator import AnchorGenerator
from maskrcnn_benchmark.modeling.rpn.inference import RPNPostProcessor
from maskrcnn_benchmark.modeling.rpn.loss import make_rpn_loss_evaluator
from maskrcnn_benchmark.modeling.rpn.rpn import RPNHead, RPNModule, build_rpn
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import ImageList

PLUS_ONE = torch.tensor([0.0, 0.0, 1.0, 1.0])


def test_registered_rpn_heads_give_per_level_logits_and_deltas():
    assert len(registry.RPN_HEADS) > 0
    assert registry.RPN_HEADS["SingleConvRPNHead"] is RPNHead
    in_channels, num_anchors, num_levels = 64, 10, 3
    features = torch.rand(2, in_channels, 24, 32)
    for builder in registry.RPN_HEADS.values():
        head = builder(default_cfg.clone(), in_channels, num_anchors)
        logits, bbox_reg = head([features] * num_levels)
        assert len(logits) == len(bbox_reg) == num_levels
        for level_logits, level_deltas in zip(logits, bbox_reg):
            assert level_logits.shape == (2, num_anchors, 24, 32)
            assert level_deltas.shape == (2, 4 * num_anchors, 24, 32)


def test_single_conv_rpn_head_init():
    torch.manual_seed(0)
    head = RPNHead(default_cfg, 64, 3)
    for layer in (head.conv, head.cls_logits, head.bbox_pred):
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.15)
        assert torch.all(layer.bias == 0)
    assert head.conv.kernel_size == (3, 3) and head.conv.padding == (1, 1)
    assert head.cls_logits.kernel_size == (1, 1) and head.bbox_pred.out_channels == 12


# RPNPostProcessor on two levels of non-overlapping anchors (one per cell) with zero deltas,
# so that proposals are the anchors themselves and NMS keeps everything: what remains is
# decided by the top-n rules alone.

IMAGE_SIZE = 128
PRE_NMS, POST_NMS, FPN_POST_NMS = 40, 30, 25


def _two_level_inputs():
    generator = torch.Generator().manual_seed(0)
    anchor_generator = AnchorGenerator(sizes=(8, 8), aspect_ratios=(1.0,), anchor_strides=(16, 32))
    images = ImageList(torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE), [(IMAGE_SIZE, IMAGE_SIZE)] * 2)
    grid = [IMAGE_SIZE // 16, IMAGE_SIZE // 32]
    features = [torch.zeros(2, 1, g, g) for g in grid]
    anchors = anchor_generator(images, features)
    # Image 0 is more confident overall, so a per-batch top-n favours it.
    offset = torch.tensor([2.0, 0.0]).view(2, 1, 1, 1)
    objectness = [torch.randn(2, 1, g, g, generator=generator) + offset for g in grid]
    deltas = [torch.zeros(2, 4, g, g) for g in grid]
    return anchors, objectness, deltas


def _candidate_scores(objectness, image):
    """Sigmoid scores that survive the per-level top-n of one image."""
    per_level = []
    for level_logits in objectness:
        scores = level_logits[image].sigmoid().flatten()
        per_level.append(scores.topk(min(PRE_NMS, POST_NMS, scores.numel())).values)
    return torch.cat(per_level)


def _postprocessor(per_batch):
    return RPNPostProcessor(
        pre_nms_top_n=PRE_NMS,
        post_nms_top_n=POST_NMS,
        nms_thresh=0.7,
        min_size=0,
        box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)),
        fpn_post_nms_top_n=FPN_POST_NMS,
        fpn_post_nms_per_batch=per_batch,
    )


def _assert_scores(boxlist, expected):
    got = boxlist.get_field("objectness").sort(descending=True).values
    torch.testing.assert_close(got, expected.sort(descending=True).values)


def _assert_boxes_are_anchors(boxlist, anchors_per_image):
    all_anchors = torch.cat([a.bbox for a in anchors_per_image])
    matches = (boxlist.bbox[:, None, :] == all_anchors[None]).all(dim=2)
    assert matches.any(dim=1).all()


def test_post_processor_training_per_batch_selects_top_n_over_the_batch():
    anchors, objectness, deltas = _two_level_inputs()
    processor = _postprocessor(per_batch=True).train()
    proposals = processor(anchors, objectness, deltas)

    candidates = [_candidate_scores(objectness, i) for i in range(2)]
    threshold = torch.cat(candidates).topk(FPN_POST_NMS).values.min()
    expected = [c[c >= threshold] for c in candidates]
    assert sum(len(p) for p in proposals) == FPN_POST_NMS
    assert len(proposals[0]) > len(proposals[1])
    for image, boxlist in enumerate(proposals):
        _assert_scores(boxlist, expected[image])
        _assert_boxes_are_anchors(boxlist, anchors[image])


@pytest.mark.parametrize("training, per_batch", [(True, False), (False, True), (False, False)])
def test_post_processor_per_image_selection(training, per_batch):
    anchors, objectness, deltas = _two_level_inputs()
    processor = _postprocessor(per_batch=per_batch).train(training)
    proposals = processor(anchors, objectness, deltas)
    for image, boxlist in enumerate(proposals):
        assert len(boxlist) == FPN_POST_NMS
        scores = boxlist.get_field("objectness")
        assert torch.all(scores[:-1] >= scores[1:]), "per-image selection is sorted by score"
        _assert_scores(boxlist, _candidate_scores(objectness, image).topk(FPN_POST_NMS).values)
        _assert_boxes_are_anchors(boxlist, anchors[image])


def test_post_processor_single_level_keeps_post_nms_top_n():
    anchors, objectness, deltas = _two_level_inputs()
    processor = _postprocessor(per_batch=True).eval()
    proposals = processor([a[:1] for a in anchors], objectness[:1], deltas[:1])
    for image, boxlist in enumerate(proposals):
        expected = objectness[0][image].sigmoid().flatten().topk(POST_NMS).values
        _assert_scores(boxlist, expected)


def test_post_processor_appends_ground_truth_in_training():
    anchors, objectness, deltas = _two_level_inputs()
    targets = [
        BoxList(torch.tensor([[10.0, 12.0, 50.0, 60.0]]), (IMAGE_SIZE, IMAGE_SIZE)),
        BoxList(torch.tensor([[0.0, 0.0, 20.0, 30.0], [5.0, 5.0, 90.0, 70.0]]), (IMAGE_SIZE, IMAGE_SIZE)),
    ]
    for target in targets:
        target.add_field("labels", torch.ones(len(target), dtype=torch.int64))
    processor = _postprocessor(per_batch=True).train()
    without_gt = processor(anchors, objectness, deltas)
    with_gt = processor(anchors, objectness, deltas, targets)
    for plain, augmented, target in zip(without_gt, with_gt, targets):
        assert len(augmented) == len(plain) + len(target)
        torch.testing.assert_close(augmented.bbox[-len(target):], target.bbox)
        assert torch.all(augmented.get_field("objectness")[-len(target):] == 1)
        assert augmented.fields() == ["objectness"]

    # At test time the ground truth is never added.
    evaluated = processor.eval()(anchors, objectness, deltas, targets)
    assert all(len(p) == FPN_POST_NMS for p in evaluated)


def test_post_processor_clips_and_drops_small_boxes():
    anchor_generator = AnchorGenerator(sizes=(32,), aspect_ratios=(1.0,), anchor_strides=(16,))
    images = ImageList(torch.zeros(1, 3, 64, 64), [(50, 40)])
    anchors = anchor_generator(images, [torch.zeros(1, 1, 4, 4)])
    objectness = [torch.linspace(-2, 2, 16).view(1, 1, 4, 4)]
    # Every decoded box is exp(-3) * 32 ~ 1.6 px wide, below MIN_SIZE 2.
    deltas = [torch.tensor([0.0, 0.0, -3.0, 0.0]).view(1, 4, 1, 1).expand(1, 4, 4, 4).contiguous()]
    processor = RPNPostProcessor(100, 100, 0.7, min_size=2, fpn_post_nms_top_n=100).eval()
    proposals = processor(anchors, objectness, deltas)[0]
    assert len(proposals) == 0, "boxes narrower than MIN_SIZE are dropped"

    processor = RPNPostProcessor(100, 100, 0.0, min_size=0, fpn_post_nms_top_n=100).eval()
    proposals = processor(anchors, [objectness[0]], [torch.zeros(1, 4, 4, 4)])[0]
    assert len(proposals) == 16
    boxes = proposals.bbox
    assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= 39
    assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= 49


# RPN loss against labels, targets and losses computed independently with torchvision.


def _loss_inputs():
    generator = torch.Generator().manual_seed(3)
    anchor_generator = AnchorGenerator(sizes=(32,), aspect_ratios=(0.5, 1.0, 2.0), anchor_strides=(16,))
    images = ImageList(torch.zeros(2, 3, 96, 96), [(90, 80), (96, 96)])
    features = [torch.zeros(2, 1, 6, 6)]
    anchors = anchor_generator(images, features)
    targets = [
        BoxList(torch.tensor([[10.0, 12.0, 45.0, 50.0], [40.0, 30.0, 75.0, 85.0]]), (80, 90)),
        BoxList(torch.tensor([[20.0, 20.0, 60.0, 40.0]]), (96, 96)),
    ]
    objectness = [torch.randn(2, 3, 6, 6, generator=generator)]
    deltas = [0.3 * torch.randn(2, 12, 6, 6, generator=generator)]
    return images, anchors, targets, objectness, deltas


def _expected_labels_and_targets(anchor_boxes, gt_boxes, width, height):
    iou = box_iou(gt_boxes + PLUS_ONE, anchor_boxes + PLUS_ONE)  # (M, N), inclusive pixels
    best_iou, best_gt = iou.max(dim=0)
    low_quality = (iou == iou.max(dim=1, keepdim=True).values).any(dim=0)
    positive = (best_iou >= 0.7) | low_quality
    negative = (best_iou < 0.3) & ~positive
    labels = torch.full((len(anchor_boxes),), -1.0)
    labels[negative] = 0.0
    labels[positive] = 1.0
    inside = (
        (anchor_boxes[:, 0] >= 0)
        & (anchor_boxes[:, 1] >= 0)
        & (anchor_boxes[:, 2] < width)
        & (anchor_boxes[:, 3] < height)
    )
    labels[~inside] = -1.0
    reg_targets = TorchvisionBoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(
        gt_boxes[best_gt] + PLUS_ONE, anchor_boxes + PLUS_ONE
    )
    return labels, reg_targets


def test_rpn_loss_matches_independent_computation_when_all_anchors_are_sampled():
    images, anchors, targets, objectness, deltas = _loss_inputs()
    cfg = default_cfg.clone()
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 100000  # sample every labelled anchor
    loss_evaluator = make_rpn_loss_evaluator(cfg, BoxCoder((1.0, 1.0, 1.0, 1.0)))
    objectness_loss, box_loss = loss_evaluator(anchors, objectness, deltas, targets)

    labels, reg_targets, logits, pred_deltas = [], [], [], []
    for image, ((height, width), target) in enumerate(zip(images.image_sizes, targets)):
        anchor_boxes = anchors[image][0].bbox
        image_labels, image_targets = _expected_labels_and_targets(anchor_boxes, target.bbox, width, height)
        labels.append(image_labels)
        reg_targets.append(image_targets)
        # Head outputs are (A, H, W) and (A * 4, H, W); anchors are ordered (y, x, a).
        logits.append(objectness[0][image].permute(1, 2, 0).reshape(-1))
        pred_deltas.append(deltas[0][image].view(3, 4, 6, 6).permute(2, 3, 0, 1).reshape(-1, 4))
    labels, reg_targets = torch.cat(labels), torch.cat(reg_targets)
    logits, pred_deltas = torch.cat(logits), torch.cat(pred_deltas)

    sampled = labels >= 0
    positive = labels == 1
    assert positive.sum() >= 3 and (labels == -1).any()
    expected_objectness = F.binary_cross_entropy_with_logits(logits[sampled], labels[sampled])
    expected_box = F.smooth_l1_loss(
        pred_deltas[positive], reg_targets[positive], beta=1.0 / 9, reduction="sum"
    ) / sampled.sum()
    torch.testing.assert_close(objectness_loss, expected_objectness)
    torch.testing.assert_close(box_loss, expected_box)


def test_rpn_loss_samples_at_most_batch_size_per_image():
    images, anchors, targets, objectness, deltas = _loss_inputs()
    cfg = default_cfg.clone()
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 8
    loss_evaluator = make_rpn_loss_evaluator(cfg, BoxCoder((1.0, 1.0, 1.0, 1.0)))
    merged = [anchors_per_image[0] for anchors_per_image in anchors]
    labels, _ = loss_evaluator.prepare_targets(merged, targets)
    pos, neg = loss_evaluator.fg_bg_sampler(labels)
    for image_labels, image_pos, image_neg in zip(labels, pos, neg):
        assert int(image_pos.sum()) <= 4
        assert int(image_pos.sum() + image_neg.sum()) == 8
        assert (image_labels[image_pos] == 1).all() and (image_labels[image_neg] == 0).all()
    objectness_loss, box_loss = loss_evaluator(anchors, objectness, deltas, targets)
    assert torch.isfinite(objectness_loss) and torch.isfinite(box_loss)


def test_rpn_loss_without_ground_truth_raises_clear_error():
    images, anchors, targets, objectness, deltas = _loss_inputs()
    loss_evaluator = make_rpn_loss_evaluator(default_cfg, BoxCoder((1.0, 1.0, 1.0, 1.0)))
    targets[1] = BoxList(torch.zeros(0, 4), (96, 96))
    with pytest.raises(ValueError, match="No ground-truth boxes available"):
        loss_evaluator(anchors, objectness, deltas, targets)


# RPNModule end to end on a tiny FPN input.


def _fpn_cfg(**rpn_overrides):
    cfg = default_cfg.clone()
    cfg.MODEL.RPN.USE_FPN = True
    cfg.MODEL.RPN.ANCHOR_STRIDE = (4, 8, 16, 32, 64)
    cfg.MODEL.RPN.PRE_NMS_TOP_N_TRAIN = 200
    cfg.MODEL.RPN.PRE_NMS_TOP_N_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOP_N_TRAIN = 100
    cfg.MODEL.RPN.POST_NMS_TOP_N_TEST = 50
    cfg.MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN = 60
    cfg.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST = 40
    for key, value in rpn_overrides.items():
        setattr(cfg.MODEL.RPN, key, value)
    return cfg


def _fpn_batch():
    generator = torch.Generator().manual_seed(0)
    images = ImageList(torch.zeros(2, 3, 128, 128), [(120, 100), (128, 128)])
    features = [torch.randn(2, 8, 128 // s, 128 // s, generator=generator) for s in (4, 8, 16, 32, 64)]
    targets = [
        BoxList(torch.tensor([[10.0, 10.0, 60.0, 50.0], [30.0, 40.0, 95.0, 110.0]]), (100, 120)),
        BoxList(torch.tensor([[0.0, 0.0, 127.0, 127.0]]), (128, 128)),
    ]
    return images, features, targets


def test_rpn_module_state_dict_names_follow_upstream():
    rpn = build_rpn(_fpn_cfg(), in_channels=8)
    keys = set(rpn.state_dict())
    assert {"head.conv.weight", "head.cls_logits.weight", "head.bbox_pred.bias"} <= keys
    assert {"anchor_generator.cell_anchors.{}".format(i) for i in range(5)} <= keys


def test_rpn_module_training_losses_backward_and_proposals():
    torch.manual_seed(0)
    rpn = build_rpn(_fpn_cfg(), in_channels=8).train()
    images, features, targets = _fpn_batch()
    proposals, losses = rpn(images, features, targets)

    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in ("conv", "cls_logits", "bbox_pred"):
        grad = getattr(rpn.head, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name

    # Per batch: at most FPN_POST_NMS_TOP_N_TRAIN proposals over both images, plus the GT.
    assert len(proposals) == 2
    assert sum(len(p) for p in proposals) <= 60 + 3
    for boxlist, target, (height, width) in zip(proposals, targets, images.image_sizes):
        assert boxlist.size == (width, height)
        torch.testing.assert_close(boxlist.bbox[-len(target):], target.bbox)
        assert not boxlist.bbox.requires_grad


def test_rpn_module_inference_proposal_bounds():
    rpn = build_rpn(_fpn_cfg(), in_channels=8).eval()
    images, features, _ = _fpn_batch()
    with torch.no_grad():
        proposals, losses = rpn(images, features)
    assert losses == {}
    for boxlist, (height, width) in zip(proposals, images.image_sizes):
        assert 0 < len(boxlist) <= 40
        boxes = boxlist.bbox
        assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= width - 1
        assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= height - 1


def test_rpn_only_returns_sorted_proposals_at_test_and_anchors_in_training():
    cfg = _fpn_cfg()
    cfg.MODEL.RPN_ONLY = True
    rpn = build_rpn(cfg, in_channels=8)
    images, features, targets = _fpn_batch()
    with torch.no_grad():
        proposals, _ = rpn.eval()(images, features)
    for boxlist in proposals:
        scores = boxlist.get_field("objectness")
        assert torch.all(scores[:-1] >= scores[1:])
    boxes, losses = rpn.train()(images, features, targets)
    assert len(boxes) == 2 and len(boxes[0]) == 5 and boxes[0][0].has_field("visibility")
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}


def test_rpn_module_training_without_targets_raises():
    rpn = build_rpn(_fpn_cfg(), in_channels=8).train()
    images, features, _ = _fpn_batch()
    with pytest.raises(ValueError, match="needs targets"):
        rpn(images, features)


def test_build_rpn_rejects_retinanet():
    cfg = _fpn_cfg()
    cfg.MODEL.RETINANET_ON = True
    with pytest.raises(NotImplementedError, match="RetinaNet is not supported in this fork"):
        build_rpn(cfg, in_channels=8)


def test_rpn_module_c4_single_level():
    cfg = default_cfg.clone()
    cfg.MODEL.RPN.PRE_NMS_TOP_N_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOP_N_TEST = 30
    rpn = build_rpn(cfg, in_channels=8).eval()
    assert isinstance(rpn, RPNModule)
    assert rpn.anchor_generator.num_anchors_per_location() == [15]
    images = ImageList(torch.zeros(1, 3, 128, 128), [(128, 128)])
    with torch.no_grad():
        proposals, _ = rpn(images, [torch.randn(1, 8, 8, 8)])
    assert 0 < len(proposals[0]) <= 30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rpn_module_on_cuda():
    rpn = build_rpn(_fpn_cfg(), in_channels=8).cuda().train()
    images, features, targets = _fpn_batch()
    images = images.to("cuda")
    features = [f.cuda() for f in features]
    targets = [t.to("cuda") for t in targets]
    proposals, losses = rpn(images, features, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert rpn.head.conv.weight.grad.abs().sum() > 0
    assert all(p.bbox.is_cuda for p in proposals)
    with torch.no_grad():
        proposals, _ = rpn.eval()(images, features)
    assert all(0 < len(p) <= 40 for p in proposals)
