"""Batched NMS (``_C.batched_nms``, all classes in one call) against ``nms`` run per class, and the box
post-processor (which uses it) against upstream's loop over the classes, on random cases with ties."""
import importlib.util
import os

import pytest
import torch

from maskrcnn_benchmark.layers import batched_nms, nms
from maskrcnn_benchmark.modeling.roi_heads.box_head.inference import PostProcessor
from maskrcnn_benchmark.structures.bounding_box import BoxList

WIDTH, HEIGHT = 120, 90
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _grid_boxes(n, generator, positions=12, sides=8):
    """(n, 4) boxes on a coarse integer grid: many identical boxes and exactly tied IoUs."""
    xy = torch.randint(0, positions, (n, 2), generator=generator).float() * 5
    wh = torch.randint(0, sides, (n, 2), generator=generator).float() * 5
    return torch.cat([xy, xy + wh], dim=1)


def _per_label_nms(boxes, scores, labels, threshold):
    """Reference: ``nms`` on each label's boxes alone, kept indices merged in ascending order."""
    kept = [torch.nonzero(labels == label).squeeze(1) for label in labels.unique()]
    kept = [index[nms(boxes[index], scores[index], threshold)] for index in kept]
    return torch.cat(kept).sort().values


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_batched_nms_equals_nms_per_label_with_ties(seed, threshold):
    generator = torch.Generator().manual_seed(seed)
    n = 400
    boxes = _grid_boxes(n, generator)
    scores = torch.randint(0, 6, (n,), generator=generator).float() / 6  # many tied scores
    labels = torch.randint(0, 9, (n,), generator=generator)
    kept = batched_nms(boxes, scores, labels, threshold)
    assert kept.dtype == torch.int64
    assert torch.equal(kept, _per_label_nms(boxes, scores, labels, threshold))


def test_batched_nms_with_one_label_is_nms():
    generator = torch.Generator().manual_seed(0)
    boxes = _grid_boxes(300, generator).double()
    scores = torch.rand(300, generator=generator, dtype=torch.float64)
    labels = torch.zeros(300, dtype=torch.int64)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5), nms(boxes, scores, 0.5))


def test_batched_nms_of_no_boxes():
    kept = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert kept.shape == (0,) and kept.dtype == torch.int64


@pytest.mark.parametrize(
    "labels, message",
    [(torch.zeros(3), "labels must be int64"), (torch.zeros(2, dtype=torch.int64), "labels must have shape")],
)
def test_batched_nms_rejects_bad_labels(labels, message):
    with pytest.raises(RuntimeError, match=message):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), labels, 0.5)


@needs_cuda
@pytest.mark.parametrize("seed", range(4))
def test_batched_nms_on_cuda_equals_nms_per_label(seed):
    generator = torch.Generator().manual_seed(seed)
    boxes = _grid_boxes(500, generator).cuda()
    scores = (torch.randint(0, 6, (500,), generator=generator).float() / 6).cuda()
    labels = torch.randint(0, 9, (500,), generator=generator).cuda()
    kept = batched_nms(boxes, scores, labels, 0.5)
    assert kept.is_cuda
    assert torch.equal(kept, _per_label_nms(boxes, scores, labels, 0.5))


def _class_loop_post_processor():
    """Upstream's PostProcessor (threshold and NMS one class at a time), as the benchmark defines it."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "benchmarks", "bench_postprocess.py")
    spec = importlib.util.spec_from_file_location("bench_postprocess_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ClassLoopPostProcessor


ClassLoopPostProcessor = _class_loop_post_processor()


def _random_predictions(num_rois, num_classes, generator, device="cpu", positions=12):
    """Post-processor inputs with tied scores (logits on a coarse grid) and overlapping boxes
    (fewer distinct ones with fewer ``positions``)."""
    logits = torch.randint(0, 4, (num_rois, num_classes), generator=generator).float()
    deltas = torch.randint(-2, 3, (num_rois, 4 * num_classes), generator=generator).float() * 0.1
    proposals = BoxList(_grid_boxes(num_rois, generator, positions), (WIDTH, HEIGHT), mode="xyxy")
    return (logits.to(device), deltas.to(device)), [proposals.to(device)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("positions", [12, 3])  # with 3, NMS keeps few, and the pruned path widens its set
@pytest.mark.parametrize(
    "score_thresh, nms_thresh, detections_per_img",
    # limits of 100 and 30 take the pruned path of nms_per_class, 0 (no limit) the full one
    [(0.0, 0.5, 100), (0.05, 0.5, 100), (0.1, 0.3, 0), (0.05, 0.0, 100), (0.0, 0.7, 30), (0.0, 0.1, 100)],
)
def test_post_processor_equals_upstream_class_loop(seed, positions, score_thresh, nms_thresh, detections_per_img):
    generator = torch.Generator().manual_seed(seed)
    num_classes = 12
    x, proposals = _random_predictions(150, num_classes, generator, positions=positions)
    expected = ClassLoopPostProcessor(score_thresh, nms_thresh, detections_per_img)(x, proposals)[0]
    result = PostProcessor(score_thresh, nms_thresh, detections_per_img)(x, proposals)[0]
    assert len(expected) > 0
    assert torch.equal(result.bbox, expected.bbox)
    assert torch.equal(result.get_field("scores"), expected.get_field("scores"))
    assert torch.equal(result.get_field("labels"), expected.get_field("labels"))


@needs_cuda
def test_post_processor_on_cuda_equals_upstream_class_loop():
    generator = torch.Generator().manual_seed(0)
    x, proposals = _random_predictions(150, 12, generator, device="cuda")
    expected = ClassLoopPostProcessor(0.0, 0.5, 100)(x, proposals)[0]
    result = PostProcessor(0.0, 0.5, 100)(x, proposals)[0]
    assert torch.equal(result.bbox, expected.bbox)
    assert torch.equal(result.get_field("labels"), expected.get_field("labels"))
