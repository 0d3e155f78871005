"""COCO evaluation of model outputs (upstream's do_coco_evaluation), checked against pycocotools."""
import json
import logging

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn_benchmark.data.datasets.evaluation import evaluate
from maskrcnn_benchmark.data.datasets.evaluation.coco.coco_eval import (
    COCOResults,
    check_expected_results,
    evaluate_box_proposals,
)
from maskrcnn_benchmark.structures.bounding_box import BoxList

SCALE = 1.6  # network input size / original image size


class COCODataset(object):
    """The attributes of maskrcnn_benchmark's COCODataset that evaluation reads."""

    def __init__(self, ann_file):
        self.coco = COCO(ann_file)
        self.ids = sorted(self.coco.imgs)
        self.id_to_img_map = dict(enumerate(self.ids))
        cat_ids = sorted(self.coco.cats)
        self.contiguous_category_id_to_json_id = {k + 1: c for k, c in enumerate(cat_ids)}
        self.json_category_id_to_contiguous_id = {c: k + 1 for k, c in enumerate(cat_ids)}

    def get_img_info(self, index):
        return self.coco.imgs[self.id_to_img_map[index]]


def _square_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture
def dataset(tmp_path):
    """3 images, 3 categories, non-overlapping objects of all sizes, one crowd region."""
    images, annotations = [], []
    for i, (width, height) in enumerate([(320, 240), (200, 300), (256, 256)]):
        images.append({"id": 10 + i, "width": width, "height": height,
                       "file_name": "{}.jpg".format(i)})
        for j, side in enumerate([12, 40, 110]):
            x, y = 5 + j * 65 % (width - side - 5), 5 + j * 70 % (height - side - 5)
            annotations.append({"id": len(annotations) + 1, "image_id": 10 + i,
                                "category_id": [3, 7, 9][(i + j) % 3], "bbox": [x, y, side, side],
                                "area": float(side * side), "iscrowd": 0,
                                "segmentation": _square_polygon(x, y, side, side)})
    annotations[-1]["iscrowd"] = 1
    annotations[-1]["segmentation"] = mask_utils.frPyObjects(
        annotations[-1]["segmentation"], 256, 256)[0]
    annotations[-1]["segmentation"]["counts"] = annotations[-1]["segmentation"]["counts"].decode()
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": "c{}".format(c)} for c in (3, 7, 9)]}
    path = tmp_path / "coco_gt.json"
    path.write_text(json.dumps(gt))
    return COCODataset(str(path))


def _predictions(dataset, rng, exact=False):
    """Per image, BoxLists in the network's input size: each annotation (jittered unless
    exact) plus random false positives; scores, labels, objectness and mask probabilities."""
    predictions = []
    for index, img_id in dataset.id_to_img_map.items():
        img = dataset.coco.imgs[img_id]
        anns = dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=img_id))
        boxes = [[x, y, x + w - 1, y + h - 1] for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [dataset.json_category_id_to_contiguous_id[a["category_id"]] for a in anns]
        if not exact:
            boxes = [[v + rng.uniform(-2, 2) for v in b] for b in boxes]
            for _ in range(5):
                x, y = rng.uniform(0, img["width"] - 40), rng.uniform(0, img["height"] - 40)
                boxes.append([x, y, x + rng.uniform(5, 40), y + rng.uniform(5, 40)])
                labels.append(int(rng.integers(1, 4)))
        size = (round(img["width"] * SCALE), round(img["height"] * SCALE))
        ratio = torch.tensor([size[0] / img["width"], size[1] / img["height"]]).repeat(2)
        prediction = BoxList(torch.tensor(boxes, dtype=torch.float32) * ratio, size)
        scores = torch.tensor(rng.uniform(0.05, 1, len(labels)), dtype=torch.float32)
        prediction.add_field("labels", torch.tensor(labels))
        prediction.add_field("scores", scores)
        prediction.add_field("objectness", scores)
        prediction.add_field("mask", torch.rand(len(labels), 1, 28, 28) * 0.4 + 0.4)
        predictions.append(prediction)
    return predictions


def _cocoeval_stats(coco_gt, records, iou_type):
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(records), iou_type)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval.stats


def test_bbox_and_segm_equal_cocoeval(dataset, tmp_path):
    predictions = _predictions(dataset, np.random.default_rng(1))
    results, coco_results = evaluate(dataset, predictions, str(tmp_path), box_only=False,
                                     iou_types=("bbox", "segm"), expected_results=(),
                                     expected_results_sigma_tol=4)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(results.results))
    assert (tmp_path / "coco_results.pth").exists()
    for iou_type in ("bbox", "segm"):
        records = json.loads((tmp_path / "{}.json".format(iou_type)).read_text())
        assert records == coco_results[iou_type]
        assert {r["image_id"] for r in records} == set(dataset.ids)
        assert {r["category_id"] for r in records} <= {3, 7, 9}
        stats = _cocoeval_stats(dataset.coco, records, iou_type)
        np.testing.assert_allclose(list(results.results[iou_type].values()), stats[:6], atol=1e-12)
    assert results.results["bbox"]["AP50"] > 0.5


def test_exact_boxes_give_full_box_ap(dataset, tmp_path):
    """Boxes in the +1 convention (x2 = x + w - 1) come back as the annotations' xywh."""
    predictions = _predictions(dataset, np.random.default_rng(2), exact=True)
    results, coco_results = evaluate(dataset, predictions, None, box_only=False,
                                     iou_types=("bbox",), expected_results=(),
                                     expected_results_sigma_tol=4)
    by_image = {}
    for r in coco_results["bbox"]:
        by_image.setdefault(r["image_id"], []).append(r["bbox"])
    for img_id, boxes in by_image.items():
        anns = dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=img_id))
        np.testing.assert_allclose(boxes, [a["bbox"] for a in anns], atol=1e-3)
    # every non-crowd annotation found at IoU ~1 (the crowd one is ignored): AP 1 where defined
    assert results.results["bbox"]["AP"] == pytest.approx(1.0, abs=1e-3)


def test_box_proposals_recall(dataset, tmp_path):
    predictions = _predictions(dataset, np.random.default_rng(3), exact=True)
    stats = evaluate_box_proposals(predictions, dataset, area="all", limit=100)
    assert stats["num_pos"] == 8  # the crowd annotation does not count
    assert stats["ar"].item() == pytest.approx(1.0)

    halved = [p[torch.arange(len(p)) % 2 == 0] for p in predictions]
    stats = evaluate_box_proposals(halved, dataset, area="all")
    expected = sum(len(range(0, len(p), 2)) for p in predictions) - 1  # minus the crowd one
    assert stats["ar"].item() == pytest.approx(expected / 8)

    results = evaluate(dataset, predictions, str(tmp_path), box_only=True, iou_types=("bbox",),
                       expected_results=(), expected_results_sigma_tol=4)
    assert results.results["box_proposal"]["AR@100"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "metrics.json").read_text()) == \
        json.loads(json.dumps(results.results))


def test_no_detections(dataset, tmp_path):
    predictions = [BoxList(torch.zeros(0, 4), (10, 10)) for _ in dataset.ids]
    for p in predictions:
        p.add_field("scores", torch.zeros(0))
        p.add_field("labels", torch.zeros(0, dtype=torch.int64))
        p.add_field("mask", torch.zeros(0, 1, 28, 28))
    results, coco_results = evaluate(dataset, predictions, str(tmp_path), box_only=False,
                                     iou_types=("bbox", "segm"), expected_results=(),
                                     expected_results_sigma_tol=4)
    assert coco_results == {"bbox": [], "segm": []}
    assert all(v == -1 for metrics in results.results.values() for v in metrics.values())
    assert json.loads((tmp_path / "bbox.json").read_text()) == []


def test_check_expected_results(caplog):
    results = COCOResults("bbox")
    results.results["bbox"]["AP"] = 0.37
    with caplog.at_level(logging.INFO, logger="maskrcnn_benchmark.inference"):
        check_expected_results(results, [["bbox", "AP", (0.38, 0.01)]], 4)
        check_expected_results(results, [["bbox", "AP", (0.30, 0.01)]], 4)
    assert caplog.records[0].levelno == logging.INFO and caplog.messages[0].startswith("PASS")
    assert caplog.records[1].levelno == logging.ERROR and caplog.messages[1].startswith("FAIL")
    with pytest.raises(ValueError, match="unknown COCO tasks"):
        COCOResults("keypoints")
