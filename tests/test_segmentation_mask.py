"""SegmentationMask: upstream maskrcnn-benchmark's polygon-vs-mask agreement cases (same
fixture, same tolerances), with pycocotools as the reference for rasterised areas and RLEs."""
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from maskrcnn_benchmark.structures.segmentation_mask import (
    FLIP_LEFT_RIGHT,
    FLIP_TOP_BOTTOM,
    BinaryMaskList,
    PolygonList,
    SegmentationMask,
)
from maskrcnn_benchmark.utils import cv2_util

# Upstream tests/test_segmentation_mask.py fixture: one instance made of two polygons.
POLY = [
    [
        [423.0, 306.5, 406.5, 277.0, 400.0, 271.5, 389.5, 277.0,
         387.5, 292.0, 384.5, 295.0, 374.5, 220.0, 378.5, 210.0,
         391.0, 200.5, 404.0, 199.5, 414.0, 203.5, 425.5, 221.0,
         438.5, 297.0, 423.0, 306.5],
        [100, 100, 200, 100, 200, 200, 100, 200],
    ]
]
WIDTH, HEIGHT = 640, 480
SIZE = WIDTH, HEIGHT


@pytest.fixture
def P():
    return SegmentationMask(POLY, SIZE, "poly")


@pytest.fixture
def M():
    return SegmentationMask(POLY, SIZE, "poly").convert("mask")


def L1(A, B):
    """Upstream's distance: the uint8 masks are subtracted before the cast, so a pixel set
    only in B counts 255 (wrap-around) and one set only in A counts 1. Upstream's tolerances
    below were set for exactly this measure."""
    diff = A.get_mask_tensor() - B.get_mask_tensor()
    return torch.sum(torch.abs(diff.float())).item()


def coco_reference_rle(polygons, width, height):
    """pycocotools' own rasterisation of one instance's polygons, as an RLE."""
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def test_convert(P, M):
    M_hat = M.convert("poly").convert("mask")
    P_hat = P.convert("mask").convert("poly")
    diff_mask = L1(M, M_hat)
    diff_poly = L1(P, P_hat)
    assert diff_mask == diff_poly
    assert diff_mask <= 8169.0
    assert diff_poly <= 8169.0


def test_crop(P, M):
    box = [400, 250, 500, 300]  # xyxy
    diff = L1(M.crop(box), P.crop(box))
    assert diff <= 1.0


def test_resize(P, M):
    new_size = 50, 25
    M_hat = M.resize(new_size)
    P_hat = P.resize(new_size)
    diff = L1(M_hat, P_hat)
    assert M.size == P.size
    assert M_hat.size == P_hat.size
    assert M.size != M_hat.size
    assert diff <= 255.0


def test_transpose(P, M):
    diff_hor = L1(M.transpose(FLIP_LEFT_RIGHT), P.transpose(FLIP_LEFT_RIGHT))
    diff_ver = L1(M.transpose(FLIP_TOP_BOTTOM), P.transpose(FLIP_TOP_BOTTOM))
    assert diff_hor <= 53250.0
    assert diff_ver <= 42494.0


@pytest.mark.parametrize("method, axis", [(FLIP_LEFT_RIGHT, 0), (FLIP_TOP_BOTTOM, 1)])
def test_polygon_flip_subtracts_one_on_both_axes(P, method, axis):
    extent = SIZE[axis]
    original = P.instances.polygons[0].polygons
    flipped = P.transpose(method).instances.polygons[0].polygons
    for before, after in zip(original, flipped):
        torch.testing.assert_close(after[axis::2], extent - before[axis::2] - 1)
        torch.testing.assert_close(after[1 - axis::2], before[1 - axis::2])
    twice = P.transpose(method).transpose(method).instances.polygons[0].polygons
    for before, after in zip(original, twice):
        torch.testing.assert_close(after, before)


def test_poly_to_mask_matches_pycocotools_area(P):
    mask = P.get_mask_tensor()
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == torch.uint8
    reference = coco_reference_rle([np.array(p, dtype=np.float64) for p in POLY[0]], WIDTH, HEIGHT)
    assert int(mask.sum()) == int(mask_utils.area(reference))
    assert np.array_equal(mask.numpy(), mask_utils.decode(reference))


def test_get_mask_tensor_stacks_instances():
    polys = [POLY[0], [[10, 10, 60, 10, 60, 40]]]
    masks = SegmentationMask(polys, SIZE).get_mask_tensor()
    assert masks.shape == (2, HEIGHT, WIDTH)
    for mask, instance in zip(masks, polys):
        reference = coco_reference_rle([np.array(p, dtype=np.float64) for p in instance], *SIZE)
        assert int(mask.sum()) == int(mask_utils.area(reference))


def fortran_counts(mask):
    """Uncompressed COCO RLE counts: run lengths of the column-major pixels, zeros first."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return counts


def test_binary_masks_from_rle_dicts(M):
    masks = M.instances.masks.numpy()
    compressed = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    from_bytes = SegmentationMask(compressed, SIZE, "mask")
    assert torch.equal(from_bytes.instances.masks, M.instances.masks)

    as_json = [dict(rle, counts=rle["counts"].decode("ascii")) for rle in compressed]
    assert torch.equal(SegmentationMask(as_json, SIZE, "mask").instances.masks, M.instances.masks)

    uncompressed = [{"size": [HEIGHT, WIDTH], "counts": fortran_counts(masks[0])}]
    from_counts = SegmentationMask(uncompressed, SIZE, "mask")
    assert torch.equal(from_counts.instances.masks, M.instances.masks)


def test_rle_at_another_size_is_resized(M):
    compressed = mask_utils.encode(np.asfortranarray(M.instances.masks.numpy().transpose(1, 2, 0)))
    resized = BinaryMaskList(compressed, (320, 240))
    assert resized.masks.shape == (1, 240, 320)
    with pytest.raises(ValueError, match="same"):
        other = mask_utils.encode(np.asfortranarray(np.zeros((10, 10, 1), dtype=np.uint8)))
        BinaryMaskList(list(compressed) + list(other), SIZE)


def test_mask_shape_must_match_size():
    with pytest.raises(ValueError, match="image size"):
        BinaryMaskList(torch.zeros(1, 20, 30, dtype=torch.uint8), (20, 30))


@pytest.mark.parametrize(
    "bad_instance, message",
    [
        ([[10, 10, 20, 10]], "4 coordinates"),
        ([[10, 10, 20, 10, 20, 20, 5]], "7 coordinates"),
        ([10, 10, 20, 10, 20, 20], "flat list"),
    ],
)
def test_malformed_polygons_raise_value_error_naming_the_instance(bad_instance, message):
    with pytest.raises(ValueError, match="instance 1: polygon 0 .*" + message):
        SegmentationMask([POLY[0], bad_instance], SIZE)


@pytest.mark.parametrize("mode", ["poly", "mask"])
@pytest.mark.parametrize(
    "box", [[10, 10, 10, 10], [300, 300, 200, 200], [700, 500, 800, 600], [-20, -20, 0.2, 0.3]]
)
def test_degenerate_crops_give_a_one_pixel_window(mode, box):
    masks = SegmentationMask(POLY, SIZE).convert(mode)
    cropped = masks.crop(box)
    width, height = cropped.size
    assert width >= 1 and height >= 1
    assert cropped.get_mask_tensor().shape == (round(height), round(width))
    assert cropped.resize((28, 28)).get_mask_tensor().shape == (28, 28)


@pytest.mark.parametrize("mode", ["poly", "mask"])
def test_indexing_iteration_and_len(mode):
    instances = [[[10, 10, 60, 10, 60, 40]], [[100, 100, 150, 100, 150, 160, 100, 160]], POLY[0]]
    masks = SegmentationMask(instances, SIZE).convert(mode)
    assert len(masks) == 3
    full = masks.get_mask_tensor()
    assert torch.equal(masks[1].get_mask_tensor(), full[1])
    assert torch.equal(masks[torch.tensor([False, True, True])].get_mask_tensor(), full[1:])
    assert torch.equal(masks[torch.tensor([2, 0])].get_mask_tensor(), full[[2, 0]])
    assert torch.equal(masks[0:2].get_mask_tensor(), full[:2])
    assert len(masks[torch.zeros(3, dtype=torch.bool)]) == 0
    singles = list(masks)
    assert len(singles) == 3
    for single, expected in zip(singles, full):
        assert len(single) == 1 and torch.equal(single.get_mask_tensor(), expected)


def test_empty_instances_stay_aligned_and_empty_lists_convert():
    masks = SegmentationMask([[], POLY[0]], SIZE)
    assert len(masks) == 2
    tensor = masks.get_mask_tensor()
    assert tensor[0].sum() == 0 and tensor[1].sum() == masks[1].get_mask_tensor().sum()

    empty = SegmentationMask([], SIZE)
    assert len(empty) == 0
    as_masks = empty.convert("mask")
    assert as_masks.instances.masks.shape == (0, HEIGHT, WIDTH)
    assert as_masks.resize((50, 25)).instances.masks.shape == (0, 25, 50)
    assert len(as_masks.convert("poly")) == 0


def test_mask_to_polygon_recovers_a_rectangle():
    mask = torch.zeros(1, 30, 40, dtype=torch.uint8)
    mask[0, 5:15, 8:28] = 1
    polygons = BinaryMaskList(mask, (40, 30)).convert_to_polygon()
    assert isinstance(polygons, PolygonList) and len(polygons) == 1
    corners = polygons.polygons[0].polygons[0].reshape(-1, 2)
    assert corners.min(0).values.tolist() == [8.0, 5.0]
    assert corners.max(0).values.tolist() == [27.0, 14.0]


def test_cv2_util_find_contours_returns_contours_and_hierarchy():
    import cv2

    image = np.zeros((20, 20), dtype=np.uint8)
    image[2:6, 2:6] = 1
    image[10:15, 12:18] = 1
    contours, hierarchy = cv2_util.findContours(image, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    assert len(contours) == 2
    assert hierarchy.shape == (1, 2, 4)


def test_bad_mode_and_size():
    with pytest.raises(ValueError, match="Unknown mode"):
        SegmentationMask(POLY, SIZE, "rle")
    with pytest.raises(ValueError, match="width, height"):
        SegmentationMask(POLY, (640,))
    with pytest.raises(ValueError, match="Unknown mode"):
        SegmentationMask(POLY, SIZE).convert("rle")
    assert SegmentationMask(POLY, (torch.tensor(640), torch.tensor(480))).size == SIZE


def test_repr(P):
    assert repr(P) == (
        "SegmentationMask(num_instances=1, image_width=640, image_height=480, mode=poly)"
    )
