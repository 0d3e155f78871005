"""BoxCoder against upstream's Caffe2 golden values and torchvision's BoxCoder (+1 shifted)."""
import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from maskrcnn_benchmark.modeling.box_coder import BoxCoder

# Caffe2 UtilsBoxesTest.TestBboxTransformRandom (generate_proposals_op_util_boxes_test.cc),
# the values upstream's tests/test_box_coder.py checks.
CAFFE2_BOXES = [
    [175.62031555, 20.91103172, 253.352005, 155.0145874],
    [169.24636841, 4.85241556, 228.8605957, 105.02092743],
    [181.77426147, 199.82876587, 192.88427734, 214.0255127],
    [174.36262512, 186.75761414, 296.19091797, 231.27906799],
    [22.73153877, 92.02596283, 135.5695343, 208.80291748],
]
CAFFE2_DELTAS = [
    [0.47861834, 0.13992102, 0.14961673, 0.71495209],
    [0.29915856, -0.35664671, 0.89018666, 0.70815367],
    [-0.03852064, 0.44466892, 0.49492538, 0.71409376],
    [0.28052918, 0.02184832, 0.65289006, 1.05060139],
    [-0.38172557, -0.08533806, -0.60335309, 0.79052375],
]
CAFFE2_DECODED = [
    [206.949539, -30.715202, 297.387665, 244.448486],
    [143.871216, -83.342888, 290.502289, 121.053398],
    [177.430283, 198.666245, 196.295273, 228.703079],
    [152.251892, 145.431564, 387.215454, 274.594238],
    [5.062420, 11.040955, 66.328903, 269.686218],
]


def _random_boxes(n, generator, max_xy=300.0, max_wh=200.0):
    xy = torch.rand(n, 2, generator=generator) * max_xy
    wh = torch.rand(n, 2, generator=generator) * max_wh + 1.0
    return torch.cat([xy, xy + wh], dim=1)


def test_decode_matches_caffe2_reference():
    box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    boxes = torch.tensor(CAFFE2_BOXES, dtype=torch.float32)
    deltas = torch.tensor(CAFFE2_DELTAS, dtype=torch.float32)
    decoded = box_coder.decode(deltas, boxes)
    np.testing.assert_allclose(decoded.numpy(), np.array(CAFFE2_DECODED), atol=1e-4)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(weights):
    generator = torch.Generator().manual_seed(0)
    box_coder = BoxCoder(weights=weights)
    anchors = _random_boxes(50, generator).double()
    targets = _random_boxes(50, generator).double()
    deltas = box_coder.encode(targets, anchors)
    torch.testing.assert_close(box_coder.decode(deltas, anchors), targets)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_matches_torchvision_on_exclusive_corners(weights):
    """Inclusive boxes [x1, x2] are torchvision's exclusive [x1, x2 + 1]."""
    generator = torch.Generator().manual_seed(1)
    ours = BoxCoder(weights=weights)
    reference = TorchvisionBoxCoder(weights=weights)
    plus_one = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)

    anchors = _random_boxes(40, generator).double()
    targets = _random_boxes(40, generator).double()
    torch.testing.assert_close(
        ours.encode(targets, anchors),
        reference.encode_single(targets + plus_one, anchors + plus_one),
    )

    # Two sets of deltas per box, including large dw/dh that hit the clamp.
    deltas = (torch.rand(40, 8, generator=generator, dtype=torch.float64) - 0.5) * 12
    expected = reference.decode_single(deltas, anchors + plus_one) - plus_one.repeat(2)
    torch.testing.assert_close(ours.decode(deltas, anchors), expected)


def test_decode_clamps_log_scale_at_log_1000_over_16():
    box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    boxes = torch.tensor([[0.0, 0.0, 9.0, 19.0]])  # 10 x 20 pixels
    deltas = torch.tensor([[0.0, 0.0, 100.0, math.log(1000.0 / 16) + 1.0]])
    x1, y1, x2, y2 = box_coder.decode(deltas, boxes)[0].tolist()
    assert x2 - x1 + 1 == pytest.approx(10 * 62.5, rel=1e-5)
    assert y2 - y1 + 1 == pytest.approx(20 * 62.5, rel=1e-5)
    # The centre stays put: (x1 + x2 + 1) / 2 equals the box's 5.0 / 10.0.
    assert (x1 + x2 + 1) / 2 == pytest.approx(5.0, abs=1e-4)
    assert (y1 + y2 + 1) / 2 == pytest.approx(10.0, abs=1e-4)
