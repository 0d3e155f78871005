"""Active-class RoI labelling of LST's instance-level balanced replay (paper §3.3, Fig. 3 (c)): in
an entry for class k (targets with the field "active_label" = k: an old class's replayed image,
or a new-class image's entry for one of its new classes, MODEL.LST.NEW_IMAGE_LABELS
"per_class"), only RoIs matched to class k are box-head positives, RoIs matched to other classes
are neither positive nor negative, and the mask head trains on class k only; active label 0 (a
new-class image with NEW_IMAGE_LABELS "all") keeps upstream's labels. The expected sets come from
torchvision's IoU."""
import os

import pytest
import torch
from torchvision.ops import box_iou

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.box_head.loss import make_roi_box_loss_evaluator
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask

LST_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "configs", "tests", "e2e_mask_rcnn_R_18_FPN_tiny_cpu_lst_heads.yaml",
)
IMAGE_SIZE = (160, 128)  # (width, height)
ACTIVE = 2
NEW_CLASSES = (5, 6)  # as if the old classes were 1..4: the image holds old classes 2, 3 and new 5, 6
GT_BOXES = torch.tensor([[10.0, 10.0, 50.0, 50.0], [50.0, 50.0, 90.0, 90.0], [100.0, 10.0, 150.0, 60.0],
                         [60.0, 95.0, 100.0, 127.0]])
GT_LABELS = torch.tensor([ACTIVE, 5, 3, 6])
PROPOSALS = torch.tensor(
    [
        [10.0, 10.0, 50.0, 50.0],  # class 2
        [12.0, 12.0, 50.0, 50.0],  # class 2
        [10.0, 10.0, 55.0, 55.0],  # class 2, also overlapping the class-5 box
        [50.0, 50.0, 90.0, 90.0],  # class 5
        [45.0, 45.0, 90.0, 90.0],  # class 5, also overlapping the class-2 box
        [52.0, 52.0, 88.0, 88.0],  # class 5
        [102.0, 12.0, 150.0, 58.0],  # class 3
        [30.0, 30.0, 70.0, 70.0],  # background overlapping classes 2 and 5
        [0.0, 95.0, 40.0, 127.0],  # background
        [110.0, 80.0, 159.0, 127.0],  # background
        [60.0, 95.0, 100.0, 127.0],  # class 6
        [61.0, 96.0, 99.0, 126.0],  # class 6
    ]
)


def reference_classes():
    """Per proposal, the class of its ground truth at IoU >= 0.5 (torchvision), or 0."""
    iou = box_iou(PROPOSALS, GT_BOXES)
    best_iou, best = iou.max(dim=1)
    classes = GT_LABELS[best].clone()
    classes[best_iou < 0.5] = 0
    return classes


def make_target(active_label=None):
    target = BoxList(GT_BOXES.clone(), IMAGE_SIZE)
    target.add_field("labels", GT_LABELS.clone())
    if active_label is not None:
        target.add_field("active_label", torch.full((len(GT_BOXES),), active_label, dtype=torch.int64))
    polygons = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in GT_BOXES.tolist()]
    target.add_field("masks", SegmentationMask(polygons, IMAGE_SIZE))
    return target


def make_cfg(active_class_only=True):
    cfg = default_cfg.clone()
    cfg.merge_from_file(LST_CONFIG)
    # Large enough that every positive and negative is sampled, so the sets are deterministic.
    cfg.merge_from_list([
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
        "MODEL.LST.ROI_ACTIVE_CLASS_ONLY", active_class_only,
    ])
    return cfg


def sampled_sets(targets, active_class_only=True):
    """Per image, (positive proposal indices, negative proposal indices, labels of all proposals)."""
    evaluator = make_roi_box_loss_evaluator(make_cfg(active_class_only))
    proposals = [BoxList(PROPOSALS.clone(), IMAGE_SIZE) for _ in targets]
    for proposals_per_image in proposals:
        proposals_per_image.add_field("index", torch.arange(len(PROPOSALS)))
    sampled = evaluator.subsample(proposals, targets)
    result = []
    for all_proposals, chosen in zip(proposals, sampled):
        labels = chosen.get_field("labels")
        index = chosen.get_field("index")
        result.append((set(index[labels > 0].tolist()), set(index[labels == 0].tolist()),
                       all_proposals.get_field("labels")))
    return result


def test_the_hand_made_case_has_proposals_of_three_classes_and_background():
    assert reference_classes().tolist() == [2, 2, 2, 5, 5, 5, 3, 0, 0, 0, 6, 6]


def test_without_the_field_every_foreground_roi_is_positive():
    classes = reference_classes()
    positives, negatives, labels = sampled_sets([make_target()])[0]
    assert positives == set(torch.nonzero(classes > 0).squeeze(1).tolist())
    assert negatives == set(torch.nonzero(classes == 0).squeeze(1).tolist())
    assert torch.equal(labels, classes)


def test_in_a_replayed_image_only_the_active_class_gives_positives():
    classes = reference_classes()
    positives, negatives, labels = sampled_sets([make_target(ACTIVE)])[0]
    _, upstream_negatives, _ = sampled_sets([make_target()])[0]

    assert positives == set(torch.nonzero(classes == ACTIVE).squeeze(1).tolist())
    assert negatives == upstream_negatives  # background stays background
    other_foreground = set(torch.nonzero((classes > 0) & (classes != ACTIVE)).squeeze(1).tolist())
    assert other_foreground and not other_foreground & (positives | negatives)
    expected_labels = classes.clone()
    expected_labels[(classes > 0) & (classes != ACTIVE)] = -1
    assert torch.equal(labels, expected_labels)


def test_new_image_labels_all_entries_and_the_switched_off_option_keep_upstream_labels():
    """A new-class image entered with active label 0 (NEW_IMAGE_LABELS "all"), and any entry with
    ROI_ACTIVE_CLASS_ONLY off, train every class as upstream does."""
    upstream = sampled_sets([make_target()])[0]
    for sets in (sampled_sets([make_target(0)])[0], sampled_sets([make_target(ACTIVE)], False)[0]):
        assert sets[0] == upstream[0] and sets[1] == upstream[1]
        assert torch.equal(sets[2], upstream[2])


def test_the_restriction_is_per_image():
    classes = reference_classes()
    (replayed_pos, _, _), (plain_pos, _, _) = sampled_sets([make_target(5), make_target()])
    assert replayed_pos == set(torch.nonzero(classes == 5).squeeze(1).tolist())
    assert plain_pos == set(torch.nonzero(classes > 0).squeeze(1).tolist())


def test_regression_targets_of_the_active_class_are_unchanged():
    evaluator = make_roi_box_loss_evaluator(make_cfg())
    proposals = [BoxList(PROPOSALS.clone(), IMAGE_SIZE)]
    _, with_field = evaluator.prepare_targets(proposals, [make_target(ACTIVE)])
    _, without_field = evaluator.prepare_targets(proposals, [make_target()])
    assert torch.equal(with_field[0], without_field[0])


class _RecordingMaskLoss:
    """Wraps the mask head's loss evaluator and records the proposals it is given."""

    def __init__(self, evaluator):
        self.evaluator = evaluator
        self.proposals = None

    def __call__(self, proposals, mask_logits, targets):
        self.proposals = proposals
        return self.evaluator(proposals, mask_logits, targets)


def roi_heads_forward(active_label):
    """One training forward of the RoI heads on PROPOSALS (each with its row number in the field
    "index") for the target with ``active_label``; returns the model, the proposals the mask
    loss saw and the losses."""
    torch.manual_seed(0)
    model = build_detection_model(make_cfg()).train()
    recorder = _RecordingMaskLoss(model.roi_heads.mask.loss_evaluator)
    model.roi_heads.mask.loss_evaluator = recorder
    width, height = IMAGE_SIZE
    images = to_image_list([torch.randn(3, height, width)], 32)
    features = model.backbone(images.tensors)
    proposals = BoxList(PROPOSALS.clone(), IMAGE_SIZE)
    proposals.add_field("index", torch.arange(len(PROPOSALS)))
    _, _, losses = model.roi_heads(features, [proposals], [make_target(active_label)])
    (mask_proposals,) = recorder.proposals
    return model, mask_proposals, losses


def mask_loss_proposals(active_label):
    _, mask_proposals, losses = roi_heads_forward(active_label)
    assert torch.isfinite(losses["loss_mask"])
    return mask_proposals


@pytest.mark.parametrize("active_label", [ACTIVE, 5])
def test_the_mask_loss_only_sees_rois_of_the_active_class(active_label):
    classes = reference_classes()
    mask_proposals = mask_loss_proposals(active_label)
    assert torch.all(mask_proposals.get_field("labels") == active_label)
    expected = PROPOSALS[classes == active_label]
    got = mask_proposals.bbox
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, expected.tolist()))


@pytest.mark.parametrize("new_class", NEW_CLASSES)
def test_in_a_new_class_entry_only_that_class_is_trained(new_class):
    """The entry (image, new class c) of NEW_IMAGE_LABELS "per_class", through a real forward of
    the RoI heads: the box head's sampled positives are c's RoIs, the RoIs of the co-occurring old
    classes (2, 3) and of the other new class are not sampled at all, background RoIs stay
    negatives, and the mask loss sees c's RoIs only."""
    classes = reference_classes()
    model, mask_proposals, losses = roi_heads_forward(new_class)

    (sampled,) = model.roi_heads.box.loss_evaluator._proposals
    labels, index = sampled.get_field("labels"), sampled.get_field("index")
    assert set(index[labels > 0].tolist()) == set(torch.nonzero(classes == new_class).squeeze(1).tolist())
    assert torch.all(labels[labels > 0] == new_class)
    assert set(index[labels == 0].tolist()) == set(torch.nonzero(classes == 0).squeeze(1).tolist())
    ignored = set(torch.nonzero((classes > 0) & (classes != new_class)).squeeze(1).tolist())
    assert {2, 3, 5, 6} - {new_class} == set(classes[sorted(ignored)].tolist())
    assert not ignored & set(index.tolist())
    assert sorted(map(tuple, mask_proposals.bbox.tolist())) == sorted(map(tuple, PROPOSALS[classes == new_class].tolist()))
    assert all(torch.isfinite(loss) for loss in losses.values()) and losses["loss_box_reg"] > 0


def test_without_the_field_the_mask_loss_sees_every_class():
    classes = reference_classes()
    labels = mask_loss_proposals(None).get_field("labels")
    assert sorted(labels.tolist()) == sorted(classes[classes > 0].tolist())


def test_a_training_step_accepts_targets_with_active_labels():
    torch.manual_seed(0)
    model = build_detection_model(make_cfg()).train()
    width, height = IMAGE_SIZE
    images = to_image_list([torch.randn(3, height, width) for _ in range(2)], 32)
    losses = model(images, [make_target(ACTIVE), make_target()])
    assert all(torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
