"""Anchors against golden values of Detectron's generate_anchors, grid shifts and visibility."""
import pytest
import torch

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling.rpn.anchor_generator import (
    AnchorGenerator,
    generate_anchors,
    make_anchor_generator,
)
from maskrcnn_benchmark.structures.image_list import ImageList

# Detectron's generate_anchors for the FPN levels, ratios (0.5, 1, 2) in that order
# (worked out from its algorithm: window [0, 0, s-1, s-1], sizes rounded at the stride's scale).
FPN_GOLDEN_ANCHORS = {
    (4, 32): [[-22, -10, 25, 13], [-14, -14, 17, 17], [-10, -22, 13, 25]],
    (8, 64): [[-40, -20, 47, 27], [-28, -28, 35, 35], [-20, -44, 27, 51]],
    (16, 128): [[-84, -40, 99, 55], [-56, -56, 71, 71], [-36, -80, 51, 95]],
    (32, 256): [[-164, -72, 195, 103], [-112, -112, 143, 143], [-76, -168, 107, 199]],
    (64, 512): [[-332, -152, 395, 215], [-224, -224, 287, 287], [-148, -328, 211, 391]],
}


@pytest.mark.parametrize("stride_size", sorted(FPN_GOLDEN_ANCHORS))
def test_generate_anchors_matches_golden_table(stride_size):
    stride, size = stride_size
    anchors = generate_anchors(stride, (size,), (0.5, 1.0, 2.0))
    expected = torch.tensor(FPN_GOLDEN_ANCHORS[stride_size], dtype=torch.float64)
    torch.testing.assert_close(anchors, expected, rtol=0, atol=0)


def test_generate_anchors_is_ratio_major_for_several_sizes():
    anchors = generate_anchors(16, (128, 256), (0.5, 1.0, 2.0))
    widths = anchors[:, 2] - anchors[:, 0] + 1
    heights = anchors[:, 3] - anchors[:, 1] + 1
    # Rows: (0.5, 128), (0.5, 256), (1, 128), (1, 256), (2, 128), (2, 256).
    golden_128 = torch.tensor(FPN_GOLDEN_ANCHORS[(16, 128)], dtype=torch.float64)
    torch.testing.assert_close(anchors[0::2], golden_128)
    torch.testing.assert_close(widths[1::2], 2 * widths[0::2])
    torch.testing.assert_close(heights[1::2], 2 * heights[0::2])


def _fpn_cfg():
    cfg = default_cfg.clone()
    cfg.MODEL.RPN.USE_FPN = True
    cfg.MODEL.RPN.ANCHOR_STRIDE = (4, 8, 16, 32, 64)
    return cfg


def test_make_anchor_generator_fpn_cell_anchors_and_state_dict():
    generator = make_anchor_generator(_fpn_cfg())
    assert generator.num_anchors_per_location() == [3] * 5
    state = generator.state_dict()
    assert sorted(state) == ["cell_anchors.{}".format(i) for i in range(5)]
    for i, key in enumerate(sorted(FPN_GOLDEN_ANCHORS)):
        assert state["cell_anchors.{}".format(i)].dtype == torch.float32
        torch.testing.assert_close(
            state["cell_anchors.{}".format(i)], torch.tensor(FPN_GOLDEN_ANCHORS[key], dtype=torch.float32)
        )


def test_make_anchor_generator_c4_uses_all_sizes_on_one_map():
    generator = make_anchor_generator(default_cfg)
    assert generator.num_anchors_per_location() == [15]
    expected = generate_anchors(16, (32, 64, 128, 256, 512), (0.5, 1.0, 2.0)).float()
    torch.testing.assert_close(next(iter(generator.cell_anchors)), expected)


def test_make_anchor_generator_rejects_mismatched_strides():
    cfg = _fpn_cfg()
    cfg.MODEL.RPN.ANCHOR_STRIDE = (4, 8, 16)
    with pytest.raises(ValueError, match="ANCHOR_STRIDE"):
        make_anchor_generator(cfg)
    cfg = default_cfg.clone()
    cfg.MODEL.RPN.ANCHOR_STRIDE = (4, 8)
    with pytest.raises(ValueError, match="single ANCHOR_STRIDE"):
        make_anchor_generator(cfg)


def test_grid_anchors_are_cell_anchors_shifted_by_stride():
    generator = AnchorGenerator(sizes=(32, 64), aspect_ratios=(0.5, 1.0, 2.0), anchor_strides=(4, 8))
    grid_sizes = [(3, 5), (2, 3)]
    for (height, width), stride, cell, anchors in zip(
        grid_sizes, (4, 8), generator.cell_anchors, generator.grid_anchors(grid_sizes)
    ):
        assert anchors.shape == (height * width * 3, 4)
        anchors = anchors.view(height, width, 3, 4)
        for y in range(height):
            for x in range(width):
                shift = torch.tensor([x, y, x, y], dtype=torch.float32) * stride
                torch.testing.assert_close(anchors[y, x], cell + shift)


def test_forward_visibility_uses_unpadded_image_size():
    generator = AnchorGenerator(sizes=(16,), aspect_ratios=(1.0,), anchor_strides=(8,))
    # One 8x8 feature map of a 64x64 padded batch; image 0 is 35 (h) x 43 (w) unpadded.
    images = ImageList(torch.zeros(2, 3, 64, 64), [(35, 43), (64, 64)])
    anchors = generator(images, [torch.zeros(2, 1, 8, 8)])
    assert len(anchors) == 2 and len(anchors[0]) == 1
    assert anchors[0][0].size == (43, 35) and anchors[1][0].size == (64, 64)

    cell = next(iter(generator.cell_anchors))[0]
    torch.testing.assert_close(cell, torch.tensor([-4.0, -4.0, 11.0, 11.0]))
    # The anchor of cell (y, x) spans [8x - 4, 8x + 11] x [8y - 4, 8y + 11]. Visible means
    # x1, y1 >= 0 and x2 <= W - 1, y2 <= H - 1: in image 0, 1 <= x <= 3 (x = 4 ends at
    # x2 = 43 = W) and 1 <= y <= 2 (y = 3 ends at y2 = 35 = H); in image 1, 1 <= x, y <= 6.
    expected_0 = torch.zeros(8, 8, dtype=torch.bool)
    expected_0[1:3, 1:4] = True
    expected_1 = torch.zeros(8, 8, dtype=torch.bool)
    expected_1[1:7, 1:7] = True
    for boxlist, expected in zip([anchors[0][0], anchors[1][0]], [expected_0, expected_1]):
        visibility = boxlist.get_field("visibility")
        assert visibility.dtype == torch.bool
        assert torch.equal(visibility.view(8, 8), expected)


def test_straddle_thresh_widens_the_visible_margin():
    generator = AnchorGenerator(sizes=(16,), aspect_ratios=(1.0,), anchor_strides=(8,), straddle_thresh=4)
    images = ImageList(torch.zeros(1, 3, 64, 64), [(35, 43)])
    visibility = generator(images, [torch.zeros(1, 1, 8, 8)])[0][0].get_field("visibility")
    # x1 >= -4 admits x = 0; x2 < 43 + 4 admits x = 4; y2 < 35 + 4 admits y = 3.
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[0:4, 0:5] = True
    assert torch.equal(visibility.view(8, 8), expected)


def test_negative_straddle_thresh_keeps_all_anchors_visible():
    generator = AnchorGenerator(sizes=(16,), aspect_ratios=(1.0,), anchor_strides=(8,), straddle_thresh=-1)
    images = ImageList(torch.zeros(1, 3, 32, 32), [(20, 20)])
    anchors = generator(images, [torch.zeros(1, 1, 4, 4)])
    assert anchors[0][0].get_field("visibility").all()
