"""LevelMapper level boundaries and Pooler against torchvision.ops.roi_align per chosen level."""
import math

import pytest
import torch
from torchvision.ops import roi_align as torchvision_roi_align

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling.poolers import LevelMapper, Pooler, make_pooler
from maskrcnn_benchmark.structures.bounding_box import BoxList

SCALES = (1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32)


def _square(side):
    """A box whose +1 width and height are both ``side``."""
    return [0.0, 0.0, side - 1.0, side - 1.0]


@pytest.mark.parametrize(
    "box, level",
    [
        # Sides (x2 - x1 + 1) on and just below the boundaries 112, 224, 448.
        (_square(224), 4),
        (_square(223), 3),
        (_square(112), 3),
        (_square(111), 2),
        (_square(448), 5),
        (_square(447), 4),
        # Clamped to [2, 5].
        (_square(8), 2),
        (_square(2000), 5),
        # sqrt(area) = 111.99995: log2(s / 224) is just below -1, the eps inside the log2
        # lifts it to level 3.
        ([0.0, 0.0, 110.9999, 111.0], 3),
    ],
)
def test_level_mapper_boundaries_use_plus_one_area_and_eps(box, level):
    mapper = LevelMapper(2, 5)
    levels = mapper([BoxList(torch.tensor([box]), (3000, 3000))])
    assert levels.dtype == torch.int64
    assert levels.tolist() == [level - 2]


def test_level_mapper_concatenates_images_in_order():
    mapper = LevelMapper(2, 5)
    boxlists = [
        BoxList(torch.tensor([_square(224), _square(50)]), (600, 600)),
        BoxList(torch.tensor([_square(500)]), (600, 600)),
    ]
    assert mapper(boxlists).tolist() == [2, 0, 3]


def _expected_level(box):
    """Level index (0 = P2) by the FPN formula with +1 widths, written out independently."""
    x1, y1, x2, y2 = box
    size = math.sqrt((x2 - x1 + 1) * (y2 - y1 + 1))
    return min(max(math.floor(4 + math.log2(size / 224 + 1e-6)), 2), 5) - 2


def _random_boxes(generator, n, image_size):
    centres = torch.rand(n, 2, generator=generator) * image_size
    sides = torch.exp(torch.rand(n, 2, generator=generator) * math.log(400.0)) + 4
    return torch.cat([centres - sides / 2, centres + sides / 2], dim=1).clamp(0, image_size - 1)


@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_pooler_matches_torchvision_roi_align_on_chosen_level(sampling_ratio):
    generator = torch.Generator().manual_seed(0)
    image_size = 512
    features = [
        torch.randn(2, 3, int(image_size * s), int(image_size * s), generator=generator)
        for s in SCALES
    ]
    boxes = [
        BoxList(_random_boxes(generator, 30, image_size), (image_size, image_size)),
        BoxList(_random_boxes(generator, 25, image_size), (image_size, image_size)),
    ]
    pooler = Pooler(output_size=(7, 7), scales=SCALES, sampling_ratio=sampling_ratio)
    result = pooler(features, boxes)
    assert result.shape == (55, 3, 7, 7)

    levels_seen = set()
    row = 0
    for image_index, boxlist in enumerate(boxes):
        for box in boxlist.bbox:
            level = _expected_level(box.tolist())
            levels_seen.add(level)
            roi = torch.cat([torch.tensor([float(image_index)]), box])[None]
            expected = torchvision_roi_align(
                features[level], roi, (7, 7), spatial_scale=SCALES[level],
                sampling_ratio=sampling_ratio, aligned=False,
            )
            torch.testing.assert_close(result[row : row + 1], expected, rtol=1e-5, atol=1e-5)
            row += 1
    assert len(levels_seen) >= 3, "the random boxes should cover several levels"


def test_single_level_pooler_is_roi_align_on_that_map():
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 4, 20, 24, generator=generator)]
    boxes = [
        BoxList(_random_boxes(generator, 5, 300), (384, 320)),
        BoxList(_random_boxes(generator, 3, 300), (384, 320)),
    ]
    pooler = Pooler(output_size=14, scales=(1.0 / 16,), sampling_ratio=0)
    rois = pooler.convert_to_roi_format(boxes)
    assert rois[:, 0].tolist() == [0.0] * 5 + [1.0] * 3
    expected = torchvision_roi_align(
        features[0], rois, (14, 14), spatial_scale=1.0 / 16, sampling_ratio=0, aligned=False
    )
    torch.testing.assert_close(pooler(features, boxes), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scales", [SCALES, (1.0 / 16,)])
def test_pooler_with_no_boxes_returns_empty_batch(scales):
    features = [torch.randn(2, 3, int(256 * s), int(256 * s)) for s in scales]
    empty = [BoxList(torch.zeros(0, 4), (256, 256)) for _ in range(2)]
    result = Pooler(output_size=(7, 7), scales=scales, sampling_ratio=2)(features, empty)
    assert result.shape == (0, 3, 7, 7)


def test_pooler_gradient_reaches_features():
    features = [torch.randn(1, 2, int(256 * s), int(256 * s), requires_grad=True) for s in SCALES]
    boxes = [BoxList(torch.tensor([_square(40), _square(300)]), (256, 256))]
    Pooler(output_size=(5, 5), scales=SCALES, sampling_ratio=2)(features, boxes).sum().backward()
    assert features[0].grad.abs().sum() > 0  # the 40-px box is pooled from P2
    assert features[2].grad.abs().sum() > 0  # the 300-px box is pooled from P4
    assert features[1].grad is None or features[1].grad.abs().sum() == 0


def test_make_pooler_reads_head_config():
    cfg = default_cfg.clone()
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.POOLER_SCALES = SCALES
    cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
    pooler = make_pooler(cfg, "ROI_BOX_HEAD")
    assert pooler.output_size == (7, 7)
    assert len(pooler.poolers) == 4
    assert (pooler.map_levels.k_min, pooler.map_levels.k_max) == (2, 5)


def test_pooler_ignores_extra_maps_and_rejects_missing_ones():
    generator = torch.Generator().manual_seed(2)
    pooler = Pooler(output_size=(7, 7), scales=SCALES, sampling_ratio=2)
    features = [torch.randn(1, 2, int(256 * s), int(256 * s), generator=generator) for s in SCALES]
    p6 = torch.randn(1, 2, 4, 4, generator=generator)
    boxes = [BoxList(torch.tensor([_square(40), _square(300)]), (256, 256))]
    # FPN backbones return P2-P6; the box and mask heads pool from P2-P5 only.
    torch.testing.assert_close(pooler(features + [p6], boxes), pooler(features, boxes))
    with pytest.raises(ValueError, match="POOLER_SCALES"):
        pooler(features[:3], boxes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pooler_on_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(3)
    features = [torch.randn(2, 3, int(512 * s), int(512 * s), generator=generator) for s in SCALES]
    boxes = [BoxList(_random_boxes(generator, 20, 512), (512, 512)) for _ in range(2)]
    pooler = Pooler(output_size=(7, 7), scales=SCALES, sampling_ratio=2)
    expected = pooler(features, boxes)
    result = pooler([f.cuda() for f in features], [b.to("cuda") for b in boxes])
    torch.testing.assert_close(result.cpu(), expected, rtol=1e-4, atol=1e-4)
