"""boxlist_ops against torchvision.ops evaluated on +1 boxes (x2 + 1, y2 + 1)."""
import pytest
import torch
from torchvision.ops import box_iou, nms, remove_small_boxes as tv_remove_small_boxes

from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.boxlist_ops import (
    boxlist_iou,
    boxlist_nms,
    cat_boxlist,
    remove_small_boxes,
)

IMAGE_SIZE = (200, 150)


def random_boxes(n, seed, max_side=60.0):
    generator = torch.Generator().manual_seed(seed)
    top_left = torch.rand(n, 2, generator=generator) * 120
    sides = torch.rand(n, 2, generator=generator) * max_side
    return torch.cat([top_left, top_left + sides], dim=1)


def exclusive(boxes):
    """The same pixels in torchvision's exclusive-corner convention."""
    return boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])


def test_boxlist_iou_matches_torchvision_on_plus_one_boxes():
    boxes1, boxes2 = random_boxes(20, seed=0), random_boxes(15, seed=1)
    iou = boxlist_iou(BoxList(boxes1, IMAGE_SIZE), BoxList(boxes2, IMAGE_SIZE))
    torch.testing.assert_close(iou, box_iou(exclusive(boxes1), exclusive(boxes2)))


def test_boxlist_iou_accepts_xywh_and_rejects_different_images():
    boxes1, boxes2 = random_boxes(5, seed=2), random_boxes(4, seed=3)
    iou = boxlist_iou(
        BoxList(boxes1, IMAGE_SIZE).convert("xywh"), BoxList(boxes2, IMAGE_SIZE)
    )
    torch.testing.assert_close(iou, box_iou(exclusive(boxes1), exclusive(boxes2)))
    with pytest.raises(RuntimeError, match="same image size"):
        boxlist_iou(BoxList(boxes1, IMAGE_SIZE), BoxList(boxes2, (10, 10)))


def test_remove_small_boxes_matches_torchvision_on_plus_one_boxes():
    boxes = random_boxes(50, seed=4, max_side=12.0)
    boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, 4.0, 9.0], [0.0, 0.0, 5.0, 3.0]])])
    boxlist = BoxList(boxes, IMAGE_SIZE)
    boxlist.add_field("labels", torch.arange(len(boxes)))
    for min_size in (0, 4, 5, 6, 8):
        kept = remove_small_boxes(boxlist, min_size)
        expected = tv_remove_small_boxes(exclusive(boxes), min_size)
        assert kept.get_field("labels").tolist() == expected.tolist()
        assert kept.mode == "xyxy"


def test_cat_boxlist_concatenates_boxes_and_fields():
    parts = []
    for seed, n in ((5, 3), (6, 0), (7, 4)):
        part = BoxList(random_boxes(n, seed), IMAGE_SIZE)
        part.add_field("scores", torch.rand(n))
        parts.append(part)
    joined = cat_boxlist(parts)
    assert len(joined) == 7 and joined.size == IMAGE_SIZE and joined.mode == "xyxy"
    torch.testing.assert_close(joined.bbox, torch.cat([p.bbox for p in parts]))
    torch.testing.assert_close(
        joined.get_field("scores"), torch.cat([p.get_field("scores") for p in parts])
    )


def test_cat_boxlist_rejects_mismatches_with_a_clear_error():
    a = BoxList(random_boxes(2, seed=8), IMAGE_SIZE)
    with pytest.raises(ValueError, match="image size"):
        cat_boxlist([a, BoxList(random_boxes(2, seed=9), (10, 10))])
    with pytest.raises(ValueError, match="mode"):
        cat_boxlist([a, a.convert("xywh")])
    b = BoxList(random_boxes(2, seed=10), IMAGE_SIZE)
    b.add_field("labels", torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="same fields"):
        cat_boxlist([a, b])
    with pytest.raises(ValueError, match="non-empty"):
        cat_boxlist([])


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_boxlist_nms_keeps_what_torchvision_keeps_on_plus_one_boxes(mode):
    boxes = random_boxes(60, seed=11)
    scores = torch.rand(60, generator=torch.Generator().manual_seed(12))
    boxlist = BoxList(boxes, IMAGE_SIZE)
    boxlist.add_field("scores", scores)
    boxlist.add_field("labels", torch.arange(60))

    kept = boxlist_nms(boxlist.convert(mode), 0.5)
    expected = nms(exclusive(boxes), scores, 0.5).sort().values
    assert kept.mode == mode
    assert kept.get_field("labels").tolist() == expected.tolist()

    capped = boxlist_nms(boxlist, 0.5, max_proposals=3)
    assert capped.get_field("labels").tolist() == expected[:3].tolist()


def test_boxlist_nms_with_custom_score_field_and_disabled_threshold():
    boxes = random_boxes(10, seed=13)
    boxlist = BoxList(boxes, IMAGE_SIZE)
    objectness = torch.rand(10, generator=torch.Generator().manual_seed(14))
    boxlist.add_field("objectness", objectness)
    kept = boxlist_nms(boxlist, 0.3, score_field="objectness")
    assert len(kept) == len(nms(exclusive(boxes), objectness, 0.3))
    assert boxlist_nms(boxlist, 0.0, score_field="objectness") is boxlist
