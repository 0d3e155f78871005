"""BoxList against maskrcnn-benchmark's +1 (inclusive-pixel) formulas."""
import pytest
import torch

from maskrcnn_benchmark.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask

WIDTH, HEIGHT = 40, 30
XYXY = [[0.0, 0.0, 9.0, 4.0], [5.0, 6.0, 20.0, 25.0], [12.5, 3.0, 39.0, 29.0]]


def make_boxlist(mode="xyxy"):
    boxes = BoxList(torch.tensor(XYXY), (WIDTH, HEIGHT), mode="xyxy")
    boxes.add_field("labels", torch.tensor([1, 2, 3]))
    return boxes.convert(mode)


def square_polygon(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


@pytest.mark.parametrize(
    "bbox, mode, message",
    [
        (torch.zeros(4), "xyxy", "2 dimensions"),
        (torch.zeros(2, 5), "xyxy", "size of 4"),
        (torch.zeros(2, 4), "cxcywh", "mode"),
    ],
)
def test_bad_input_raises_value_error(bbox, mode, message):
    with pytest.raises(ValueError, match=message):
        BoxList(bbox, (WIDTH, HEIGHT), mode=mode)


def test_convert_follows_plus_one_convention_and_round_trips():
    xyxy = make_boxlist()
    xywh = xyxy.convert("xywh")
    x1, y1, x2, y2 = torch.tensor(XYXY).unbind(1)
    expected = torch.stack([x1, y1, x2 - x1 + 1, y2 - y1 + 1], dim=1)
    torch.testing.assert_close(xywh.bbox, expected)
    assert xywh.mode == "xywh"
    assert torch.equal(xywh.get_field("labels"), xyxy.get_field("labels"))
    torch.testing.assert_close(xywh.convert("xyxy").bbox, xyxy.bbox)
    assert xyxy.convert("xyxy") is xyxy
    with pytest.raises(ValueError, match="mode"):
        xyxy.convert("yxyx")


def test_area_is_plus_one_in_xyxy_and_product_in_xywh():
    boxes = torch.tensor(XYXY)
    expected = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    torch.testing.assert_close(make_boxlist().area(), expected)
    torch.testing.assert_close(make_boxlist("xywh").area(), expected)


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_resize_same_ratio_scales_all_coordinates(mode):
    resized = make_boxlist(mode).resize((WIDTH * 2, HEIGHT * 2))
    assert resized.size == (WIDTH * 2, HEIGHT * 2)
    assert resized.mode == mode
    torch.testing.assert_close(resized.bbox, make_boxlist(mode).bbox * 2)


def test_resize_uses_separate_x_and_y_ratios():
    resized = make_boxlist().resize((WIDTH * 3, HEIGHT / 2))
    boxes = torch.tensor(XYXY)
    expected = boxes * torch.tensor([3.0, 0.5, 3.0, 0.5])
    torch.testing.assert_close(resized.bbox, expected)
    assert torch.equal(resized.get_field("labels"), torch.tensor([1, 2, 3]))


def test_transpose_left_right_subtracts_one_and_top_bottom_does_not():
    boxes = torch.tensor(XYXY)
    x1, y1, x2, y2 = boxes.unbind(1)

    hflip = make_boxlist().transpose(FLIP_LEFT_RIGHT)
    torch.testing.assert_close(
        hflip.bbox, torch.stack([WIDTH - x2 - 1, y1, WIDTH - x1 - 1, y2], dim=1)
    )
    torch.testing.assert_close(hflip.transpose(FLIP_LEFT_RIGHT).bbox, boxes)

    vflip = make_boxlist().transpose(FLIP_TOP_BOTTOM)
    torch.testing.assert_close(vflip.bbox, torch.stack([x1, HEIGHT - y2, x2, HEIGHT - y1], dim=1))

    hflip_xywh = make_boxlist("xywh").transpose(FLIP_LEFT_RIGHT)
    assert hflip_xywh.mode == "xywh"
    torch.testing.assert_close(hflip_xywh.convert("xyxy").bbox, hflip.bbox)
    with pytest.raises(NotImplementedError):
        make_boxlist().transpose(2)


def test_crop_shifts_and_clamps_to_the_crop_box():
    crop_box = [5, 2, 25, 20]
    cropped = make_boxlist().crop(crop_box)
    w, h = crop_box[2] - crop_box[0], crop_box[3] - crop_box[1]
    boxes = torch.tensor(XYXY)
    shifted = boxes - torch.tensor([5.0, 2.0, 5.0, 2.0])
    expected = torch.stack(
        [
            shifted[:, 0].clamp(0, w),
            shifted[:, 1].clamp(0, h),
            shifted[:, 2].clamp(0, w),
            shifted[:, 3].clamp(0, h),
        ],
        dim=1,
    )
    assert cropped.size == (w, h)
    torch.testing.assert_close(cropped.bbox, expected)
    assert torch.equal(cropped.get_field("labels"), torch.tensor([1, 2, 3]))


def test_geometry_is_applied_to_mask_fields():
    boxes = BoxList(torch.tensor([[10.0, 5.0, 19.0, 14.0]]), (WIDTH, HEIGHT))
    boxes.add_field("masks", SegmentationMask([square_polygon(10, 5, 19, 14)], (WIDTH, HEIGHT)))

    resized = boxes.resize((WIDTH * 2, HEIGHT))
    assert resized.get_field("masks").size == (WIDTH * 2, HEIGHT)
    flipped = boxes.transpose(FLIP_LEFT_RIGHT)
    assert torch.equal(
        flipped.get_field("masks").instances.polygons[0].polygons[0][0::2],
        torch.tensor([WIDTH - 10 - 1, WIDTH - 19 - 1, WIDTH - 19 - 1, WIDTH - 10 - 1.0]),
    )
    cropped = boxes.crop([8, 4, 30, 20])
    assert cropped.get_field("masks").size == (22, 16)


@pytest.mark.parametrize(
    "crop_box", [[10, 10, 10, 10], [20, 15, 12, 8], [100, 100, 120, 130], [-5, -5, 0.5, 0.5]]
)
def test_degenerate_crops_and_resizes_do_not_crash(crop_box):
    boxes = BoxList(torch.tensor([[3.0, 3.0, 3.0, 3.0], [10.0, 10.0, 5.0, 5.0]]), (WIDTH, HEIGHT))
    boxes.add_field("masks", SegmentationMask([square_polygon(3, 3, 9, 9)] * 2, (WIDTH, HEIGHT)))
    cropped = boxes.crop(crop_box)
    assert len(cropped) == 2
    assert cropped.get_field("masks").get_mask_tensor().shape[0] == 2
    resized = boxes.resize((7, 9))
    assert len(resized) == 2


def test_clip_to_image_clamps_to_last_pixel_and_drops_strictly_empty_boxes():
    boxes = BoxList(
        torch.tensor(
            [
                [-5.0, -3.0, 50.0, 40.0],  # clamped to the image
                [7.0, 2.0, 7.0, 9.0],  # one pixel wide: x2 == x1, dropped
                [3.0, 3.0, 8.0, 8.0],  # kept as is
            ]
        ),
        (WIDTH, HEIGHT),
    )
    boxes.add_field("labels", torch.tensor([1, 2, 3]))
    clipped = boxes.clip_to_image(remove_empty=True)
    torch.testing.assert_close(
        clipped.bbox, torch.tensor([[0.0, 0.0, WIDTH - 1, HEIGHT - 1], [3.0, 3.0, 8.0, 8.0]])
    )
    assert clipped.get_field("labels").tolist() == [1, 3]
    assert len(boxes.clip_to_image(remove_empty=False)) == 3


def test_clip_to_image_in_xywh_clamps_the_corners():
    boxes = BoxList(torch.tensor([[30.0, 20.0, 20.0, 20.0]]), (WIDTH, HEIGHT), mode="xywh")
    clipped = boxes.clip_to_image()
    assert clipped.mode == "xywh"
    expected = torch.tensor([[30.0, 20.0, WIDTH - 1, HEIGHT - 1]])
    torch.testing.assert_close(clipped.convert("xyxy").bbox, expected)


@pytest.mark.parametrize(
    "index, expected",
    [
        (torch.tensor([True, False, True]), [1, 3]),
        (torch.tensor([2, 0]), [3, 1]),
        (slice(1, 3), [2, 3]),
        (1, [2]),
    ],
)
def test_indexing_applies_to_every_field(index, expected):
    boxes = make_boxlist()
    polygons = [square_polygon(i, i, i + 5, i + 5) for i in (1, 2, 3)]
    boxes.add_field("masks", SegmentationMask(polygons, (WIDTH, HEIGHT)))
    selected = boxes[index]
    rows = [label - 1 for label in expected]
    assert selected.get_field("labels").tolist() == expected
    torch.testing.assert_close(selected.bbox, torch.tensor(XYXY)[rows])
    masks = selected.get_field("masks")
    assert len(masks) == len(expected)
    starts = [float(p.polygons[0][0]) for p in masks.instances.polygons]
    assert starts == [float(label) for label in expected]


def test_copy_with_fields():
    boxes = make_boxlist()
    boxes.add_field("scores", torch.rand(3))
    copied = boxes.copy_with_fields(["labels"])
    assert copied.fields() == ["labels"]
    assert copied.copy_with_fields("missing", skip_missing=True).fields() == []
    with pytest.raises(KeyError, match="missing"):
        boxes.copy_with_fields(["labels", "missing"])


def test_repr_and_len():
    boxes = make_boxlist()
    assert len(boxes) == 3
    assert repr(boxes) == "BoxList(num_boxes=3, image_width=40, image_height=30, mode=xyxy)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_moves_boxes_and_tensor_fields():
    moved = make_boxlist().to("cuda")
    assert moved.bbox.is_cuda and moved.get_field("labels").is_cuda
    torch.testing.assert_close(moved.to("cpu").bbox, torch.tensor(XYXY))
