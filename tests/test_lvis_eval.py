"""FastLVISEval, the instance-count bins, Fixed AP, tools/eval_lvis.py and the LVIS model-output
side, checked against lvis-api's LVISEval (lvis 0.5.3, with np.float restored for it only)."""
import copy
import importlib.util
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from lvis import LVIS, LVISEval, LVISResults

from fixtures_training import tiny_cfg, write_fixture_catalog
from maskrcnn_benchmark.data import make_data_loader
from maskrcnn_benchmark.data.datasets.evaluation import evaluate
from maskrcnn_benchmark.data.datasets.evaluation.lvis.bins import (
    group_ap,
    instance_count_bin_ap,
    per_category_ap,
    training_instance_counts,
)
from maskrcnn_benchmark.data.datasets.evaluation.lvis.fast_eval import FastLVISEval
from maskrcnn_benchmark.data.datasets.evaluation.lvis.fixed_ap import fixed_ap_evaluator, top_per_category
from maskrcnn_benchmark.data.datasets.evaluation.lvis.lvis_eval import (
    prepare_for_lvis_detection,
    prepare_for_lvis_segmentation,
)
from maskrcnn_benchmark.engine.inference import run_test
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.mask_head.inference import Masker
from maskrcnn_benchmark.structures.bounding_box import BoxList

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
                "AR@300", "ARs@300", "ARm@300", "ARl@300"]


# ---------------------------------------------------------------------------- fixtures
def _ellipse(box, rng, points=10):
    x, y, w, h = box
    t = np.linspace(0, 2 * np.pi, points, endpoint=False) + rng.uniform(0, 1)
    r = rng.uniform(0.75, 1.0, points)
    return np.stack([x + w / 2 + r * np.cos(t) * w / 2,
                     y + h / 2 + r * np.sin(t) * h / 2], 1).ravel().tolist()


def _rle(polygon, height, width):
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def make_case(seed, num_images=16, num_cats=24, max_dets=340, score_decimals=None,
              first_ann_id=1, with_ignore=False):
    """A random LVIS-like (ground truth, results) pair exercising the federated protocol.

    Categories with a long-tailed popularity (some without validation annotations); per image
    0-3 positive categories, negative and not-exhaustive lists, annotations of area 0;
    0..max_dets - 1 detections per image (above and below the 300 cap) near annotations, on
    negative categories, on random categories, plus a few of unknown categories and of zero
    width. Results carry both bbox and segmentation.
    """
    rng = np.random.default_rng(seed)
    cat_ids = sorted(int(c) for c in rng.choice(np.arange(1, 4 * num_cats), num_cats,
                                                replace=False))
    cats = [{"id": c, "name": "c{}".format(c), "frequency": "rcf"[rng.integers(3)]}
            for c in cat_ids]
    popularity = rng.pareto(1.0, num_cats) + 0.05
    popularity /= popularity.sum()
    images, anns, results = [], [], []
    for i in range(num_images):
        img_id = 100 + 3 * i
        width, height = int(rng.integers(80, 160)), int(rng.integers(80, 160))
        positive = [int(c) for c in rng.choice(cat_ids, rng.integers(0, 4), replace=False,
                                               p=popularity)]
        others = [c for c in cat_ids if c not in positive]
        negative = [int(c) for c in rng.choice(others, rng.integers(0, 5), replace=False)]
        images.append({"id": img_id, "width": width, "height": height,
                       "neg_category_ids": negative,
                       "not_exhaustive_category_ids": [c for c in positive if rng.random() < 0.3]})
        image_anns = []
        for c in positive:
            for _ in range(rng.integers(1, 6)):
                w, h = float(rng.uniform(2, width / 2)), float(rng.uniform(2, height / 2))
                box = [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]
                polygon = _ellipse(box, rng)
                ann = {"image_id": img_id, "category_id": c, "bbox": box, "segmentation": [polygon],
                       "area": float(mask_utils.area(_rle(polygon, height, width)))}
                if rng.random() < 0.05:
                    ann["area"] = 0.0
                if with_ignore and rng.random() < 0.15:
                    ann["ignore"] = 1
                image_anns.append(ann)
        rng.shuffle(image_anns)
        anns.extend(image_anns)
        for _ in range(int(rng.integers(0, max_dets))):
            if image_anns and rng.random() < 0.6:
                ann = image_anns[rng.integers(len(image_anns))]
                box = [v * s for v, s in zip(ann["bbox"], rng.uniform(0.8, 1.2, 4))]
                cat = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids))
            else:
                w, h = float(rng.uniform(2, width / 2)), float(rng.uniform(2, height / 2))
                box = [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]
                federated = negative + positive
                cat = int(rng.choice(federated)) if federated and rng.random() < 0.5 \
                    else int(rng.choice(cat_ids))
            if rng.random() < 0.01:
                cat = 4 * num_cats + 7  # not a category of the ground truth
            if rng.random() < 0.01:
                box[2] = 0.0
            score = float(rng.random())
            if score_decimals is not None:
                score = round(score, score_decimals)
            results.append({"image_id": img_id, "category_id": cat, "score": score,
                            "bbox": [float(v) for v in box],
                            "segmentation": _rle(_ellipse(box, rng), height, width)})
    for k, ann in enumerate(anns):
        ann["id"] = first_ann_id + k
    rng.shuffle(results)
    return {"images": images, "annotations": anns, "categories": cats}, results


def lvis_api(tmp_path, monkeypatch):
    """A function (gt dict, results, iou_type, max_dets=300) -> LVISEval after run().

    max_dets < 0 switches the per-image cap off, in LVISResults and LVISEval's params."""
    def run(gt, results, iou_type, max_dets=300):
        monkeypatch.setattr(np, "float", float, raising=False)  # lvis 0.5.3 needs the alias
        path = str(tmp_path / "reference_gt.json")
        with open(path, "w") as f:
            json.dump(gt, f)
        lvis_gt = LVIS(path)
        lvis_dt = LVISResults(lvis_gt, copy.deepcopy(results), max_dets=max_dets)
        evaluator = LVISEval(lvis_gt, lvis_dt, iou_type)
        evaluator.params.max_dets = max_dets
        evaluator.run()
        monkeypatch.undo()
        return evaluator
    return run


@pytest.fixture
def reference(tmp_path, monkeypatch):
    return lvis_api(tmp_path, monkeypatch)


def ours(tmp_path, gt, results, iou_type, max_dets=300):
    path = str(tmp_path / "gt.json")
    with open(path, "w") as f:
        json.dump(gt, f)
    evaluator = FastLVISEval(LVIS(path), results, iou_type, max_dets=max_dets)
    evaluator.run()
    return evaluator


def assert_same_evaluation(fast, ref, keys=SUMMARY_KEYS):
    for key in keys:
        assert abs(fast.results[key] - ref.results[key]) <= 1e-6, key
    np.testing.assert_array_equal(fast.eval["precision"], ref.eval["precision"])
    np.testing.assert_array_equal(fast.eval["recall"], ref.eval["recall"])


# ---------------------------------------------------------------------------- LVISEval parity
CASES = [
    dict(seed=0),
    dict(seed=1, score_decimals=1),  # many score ties
    dict(seed=2, with_ignore=True),
    dict(seed=3, first_ann_id=0),  # an annotation with id 0 (lvis-api counts a match to it as none)
    dict(seed=4, score_decimals=2, with_ignore=True),
]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "seed{}".format(c["seed"]))
def test_identical_to_lvis_api(tmp_path, reference, case, iou_type):
    gt, results = make_case(**case)
    assert max(np.unique([r["image_id"] for r in results], return_counts=True)[1]) > 300
    assert_same_evaluation(ours(tmp_path, gt, results, iou_type), reference(gt, results, iou_type))


@pytest.mark.parametrize("iou_type, drop", [("bbox", "bbox"), ("segm", "segmentation"),
                                            ("bbox", "segmentation"), ("segm", "bbox")])
def test_single_format_results(tmp_path, reference, iou_type, drop):
    """Box-only results give masks from their boxes, mask-only results boxes from their masks,
    and the areas follow the first result's format, as in LVISResults."""
    gt, results = make_case(seed=5, num_images=8)
    for r in results:
        del r[drop]
    assert_same_evaluation(ours(tmp_path, gt, results, iou_type), reference(gt, results, iou_type))


def test_custom_detection_cap(tmp_path, reference):
    gt, results = make_case(seed=6, num_images=8, max_dets=60)
    fast = ours(tmp_path, gt, results, "bbox", max_dets=20)
    ref = reference(gt, results, "bbox", max_dets=20)
    assert_same_evaluation(fast, ref, keys=SUMMARY_KEYS[:9])


def test_inputs_are_not_modified(tmp_path):
    gt, results = make_case(seed=7, num_images=6)
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    path = str(tmp_path / "gt.json")
    with open(path, "w") as f:
        json.dump(gt, f)
    lvis_gt = LVIS(path)
    FastLVISEval(lvis_gt, results, "segm").run()
    assert results == results_before
    assert lvis_gt.dataset == gt_before


def test_empty_results_score_zero(tmp_path):
    gt, _ = make_case(seed=8, num_images=6)
    fast = ours(tmp_path, gt, [], "bbox")
    has_gt = {a["category_id"] for a in gt["annotations"] if a["area"] > 0}
    for k, cat_id in enumerate(fast.params.cat_ids):
        expected = 0.0 if cat_id in has_gt else -1.0
        assert np.all(fast.eval["precision"][:, :, k, 0] == expected)
    assert fast.results["AP"] == 0.0


def test_unknown_image_is_an_error(tmp_path):
    gt, results = make_case(seed=9, num_images=4)
    results.append(dict(results[0], image_id=999999))
    with pytest.raises(ValueError, match="999999"):
        ours(tmp_path, gt, results, "bbox")


# ---------------------------------------------------------------------------- Fixed AP
FIXED_AP_KEYS = SUMMARY_KEYS[:9] + ["AR@-1", "ARs@-1", "ARm@-1", "ARl@-1"]


def reference_top_per_category(results, k):
    """The protocol of Dave et al. 2021 (Sec. 3) written out: per category, the k best results
    by score (a stable sort, so ties keep the earlier record), listed in the input order."""
    kept = set()
    for cat in {r["category_id"] for r in results}:
        mine = [i for i, r in enumerate(results) if r["category_id"] == cat]
        kept.update(sorted(mine, key=lambda i: -results[i]["score"])[:k])
    return [results[i] for i in sorted(kept)]


def fixed_ap_reference(reference, gt, results, iou_type, k):
    """lvis-api's LVISEval, per-image cap off, on the test's own top-k per category."""
    return reference(gt, reference_top_per_category(results, k), iou_type, max_dets=-1)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed, k, score_decimals", [(20, 25, None), (21, 40, 2), (22, 10 ** 6, None)])
def test_fixed_ap_equals_the_protocol_on_lvis_api(tmp_path, reference, iou_type, seed, k,
                                                   score_decimals):
    gt, results = make_case(seed=seed, num_images=12, max_dets=500,
                            score_decimals=score_decimals)
    per_image = np.unique([r["image_id"] for r in results], return_counts=True)[1]
    assert per_image.max() > 300  # the standard cap would drop results here
    fast = fixed_ap_evaluator(LVIS(_write(tmp_path / "gt.json", gt)), results, iou_type, k)
    ref = fixed_ap_reference(reference, gt, results, iou_type, k)
    assert_same_evaluation(fast, ref, keys=FIXED_AP_KEYS)
    if k < 10 ** 6:
        per_category = np.unique([r["category_id"] for r in results], return_counts=True)[1]
        assert per_category.max() > k  # the per-category limit is active
        standard = reference(gt, results, iou_type)
        assert fast.results["AP"] != standard.results["AP"]
    counts = {c["id"]: n for c, n in zip(gt["categories"], [1, 3, 7, 20, 200, 2000] * 4)}
    for label, member in PAPER_BINS.items():
        cats = [c for c in ref.params.cat_ids if member(counts[c])]
        assert abs(instance_count_bin_ap(fast, counts)[label] - _reference_ap(ref, cats)) <= 1e-12


@pytest.mark.parametrize("inference_dets_per_img, level, says", [
    (0, logging.INFO, "all they have above the score threshold"),
    (300, logging.WARNING, "infer without a per-image cap (this one kept 300 per image)"),
    (None, logging.WARNING, "infer without a per-image cap (MODEL.ROI_HEADS.DETECTIONS_PER_IMG 0"),
])
def test_fixed_ap_says_why_categories_have_fewer_detections_than_the_limit(caplog, inference_dets_per_img,
                                                                           level, says):
    results = [{"category_id": c, "score": s} for c, s in [(1, 0.9), (1, 0.8), (1, 0.7), (2, 0.6)]]
    with caplog.at_level(logging.INFO, logger="maskrcnn_benchmark"):
        kept = top_per_category(results, 2, inference_dets_per_img)
    assert kept == results[:2] + results[3:]
    messages = [r for r in caplog.records if "Fixed AP" in r.getMessage()]
    assert len(messages) == 1 and messages[0].levelno == level
    assert "1 of the 2 detected categories have fewer than 2 detections" in messages[0].getMessage()
    assert says in messages[0].getMessage()


# ---------------------------------------------------------------------------- bins, groups
PAPER_BINS = {  # the LST paper's bins of training instance counts, as inequalities
    "(0,1]": lambda n: 0 < n <= 1,
    "(0,5)": lambda n: 0 < n < 5,
    "(0,10)": lambda n: 0 < n < 10,
    "[10,100)": lambda n: 10 <= n < 100,
    "[100,1000)": lambda n: 100 <= n < 1000,
    "[1000,-)": lambda n: n >= 1000,
}


def _reference_ap(ref, category_ids):
    """Mean of LVISEval's precision entries > -1 at area 'all' over the given categories."""
    idx = [ref.params.cat_ids.index(c) for c in category_ids]
    p = ref.eval["precision"][:, :, idx, 0]
    return float(np.mean(p[p > -1])) if np.any(p > -1) else -1.0


def test_bins_groups_and_per_category_ap(tmp_path, reference):
    gt, results = make_case(seed=10, num_images=20)
    fast = ours(tmp_path, gt, results, "segm")
    ref = reference(gt, results, "segm")
    rng = np.random.default_rng(0)
    counts = {c["id"]: int(v) for c, v in zip(
        gt["categories"], rng.choice([0, 1, 3, 4, 5, 9, 10, 50, 99, 100, 999, 1000, 5000],
                                     len(gt["categories"])))}

    bins = instance_count_bin_ap(fast, counts)
    assert list(bins) == list(PAPER_BINS)
    for label, member in PAPER_BINS.items():
        cats = [c for c in ref.params.cat_ids if member(counts[c])]
        assert abs(bins[label] - _reference_ap(ref, cats)) <= 1e-12, label

    # APr/c/f of lvis-api are the same computation over its frequency groups
    freq = {f: [c["id"] for c in gt["categories"] if c["frequency"] == f] for f in "rcf"}
    for f, key in zip("rcf", ["APr", "APc", "APf"]):
        assert abs(group_ap(fast, [freq[f]])[0] - ref.results[key]) <= 1e-12

    groups = {"old": ref.params.cat_ids[:10], "new": ref.params.cat_ids[10:],
              "all": ref.params.cat_ids}
    for name, value in group_ap(fast, groups).items():
        assert abs(value - _reference_ap(ref, groups[name])) <= 1e-12
    for cat_id, value in per_category_ap(fast).items():
        assert abs(value - _reference_ap(ref, [cat_id])) <= 1e-12
    with pytest.raises(ValueError, match="not categories"):
        group_ap(fast, [[123456]])


def test_training_instance_counts_count_annotations_not_the_fields(caplog):
    train = {"images": [{"id": 1, "width": 20, "height": 20, "file_name": "1.jpg"}],
             "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)],
             "annotations": [{"id": k, "image_id": 1, "category_id": c, "bbox": [2, 2, 5, 5]}
                             for k, c in enumerate([1, 1, 3])]}
    assert training_instance_counts(train) == {1: 2, 2: 0, 3: 1}
    for c, n in zip(train["categories"], [2, 8, 9]):
        c["instance_count"] = n  # 2 and 3 are stale
    with caplog.at_level(logging.WARNING):
        assert training_instance_counts(train) == {1: 2, 2: 0, 3: 1}
    stale = [r.getMessage() for r in caplog.records if "instance_count fields differ" in r.getMessage()]
    assert len(stale) == 1
    assert "2 categories'" in stale[0] and "category 2: field 8, counted 0" in stale[0]


# ---------------------------------------------------------------------------- the CLI
def _write(path, obj):
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "eval_lvis.py"), *args],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)


def test_cli_end_to_end(tmp_path, reference):
    gt, results = make_case(seed=11, num_images=10)
    results = [r for r in results if r["category_id"] in {c["id"] for c in gt["categories"]}]
    for r in results:
        del r["bbox"]
    # Categories alone: the bins come from their instance_count fields.
    train = {"categories": [dict(c, instance_count=(k * 37) % 1500)
                            for k, c in enumerate(gt["categories"])]}
    out = tmp_path / "metrics.json"
    done = _run_cli("--gt", _write(tmp_path / "val.json", gt),
                    "--dt", _write(tmp_path / "dt.json", results), "--iou-type", "segm",
                    "--train", _write(tmp_path / "train.json", train), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=300 catIds=all]" \
        in done.stdout

    ref = reference(gt, results, "segm")
    metrics = json.loads(out.read_text())
    assert list(metrics)[:9] == SUMMARY_KEYS[:9]
    for key in SUMMARY_KEYS:
        assert abs(metrics[key] - ref.results[key]) <= 1e-6, key
    counts = {c["id"]: c["instance_count"] for c in train["categories"]}
    for label, member in PAPER_BINS.items():
        cats = [c for c in ref.params.cat_ids if member(counts[c])]
        assert abs(metrics["bins"][label] - _reference_ap(ref, cats)) <= 1e-9
    assert set(metrics["per_category_AP"]) == {str(c) for c in ref.params.cat_ids}
    for cat_id, value in metrics["per_category_AP"].items():
        assert abs(value - _reference_ap(ref, [int(cat_id)])) <= 1e-9


def _cli_main():
    """tools/eval_lvis.py's main(), run in this process (a subprocess start costs seconds)."""
    spec = importlib.util.spec_from_file_location("eval_lvis", os.path.join(REPO_ROOT, "tools",
                                                                            "eval_lvis.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_fixed_ap(tmp_path, reference, capsys):
    gt, results = make_case(seed=23, num_images=8)
    results = [r for r in results if r["category_id"] in {c["id"] for c in gt["categories"]}]
    for r in results:
        del r["segmentation"]
    train = {"categories": [dict(c, instance_count=(k * 41) % 1500)
                            for k, c in enumerate(gt["categories"])]}
    out = tmp_path / "metrics.json"
    _cli_main()(["--gt", _write(tmp_path / "val.json", gt), "--dt", _write(tmp_path / "dt.json",
                 results), "--iou-type", "bbox", "--train", _write(tmp_path / "train.json", train),
                 "--fixed-ap", "--dets-per-cat", "30", "--out", str(out)])
    assert "Fixed AP (30 results per category, no per-image cap)" in capsys.readouterr().out
    metrics = json.loads(out.read_text())
    standard = reference(gt, results, "bbox")
    fixed = fixed_ap_reference(reference, gt, results, "bbox", 30)
    for key in SUMMARY_KEYS[:9]:
        assert abs(metrics[key] - standard.results[key]) <= 1e-6, key
        assert abs(metrics["fixed_AP"][key] - fixed.results[key]) <= 1e-6, key
    counts = {c["id"]: c["instance_count"] for c in train["categories"]}
    for label, member in PAPER_BINS.items():
        cats = [c for c in fixed.params.cat_ids if member(counts[c])]
        assert abs(metrics["fixed_AP"]["bins"][label] - _reference_ap(fixed, cats)) <= 1e-9
    with pytest.raises(SystemExit):
        _cli_main()(["--gt", "a", "--dt", "b", "--iou-type", "bbox", "--dets-per-cat", "0"])


def test_cli_bad_inputs(tmp_path):
    gt, results = make_case(seed=12, num_images=4)
    results = [r for r in results if r["category_id"] in {c["id"] for c in gt["categories"]}]
    gt_path = _write(tmp_path / "val.json", gt)
    dt_path = _write(tmp_path / "dt.json", results)
    missing = str(tmp_path / "nope.json")
    done = _run_cli("--gt", missing, "--dt", dt_path, "--iou-type", "bbox")
    assert done.returncode != 0 and missing in done.stderr and "not found" in done.stderr
    assert "Traceback" not in done.stderr

    bad_json = _write(tmp_path / "broken.json", '[{"image_id": 1,')
    bad_image = _write(tmp_path / "bad_image.json",
                       results[:3] + [dict(results[3], image_id=424242)] + results[4:])
    bad_category = _write(tmp_path / "bad_category.json",
                          results[:2] + [dict(results[2], category_id=-5)] + results[3:])
    no_score = _write(tmp_path / "no_score.json", [{k: v for k, v in results[0].items()
                                                     if k != "score"}])
    wrong_size = _write(tmp_path / "wrong_size.json", [dict(results[0], segmentation=dict(
        results[0]["segmentation"], size=[1, 1]))])
    gt_without_neg = copy.deepcopy(gt)
    del gt_without_neg["images"][2]["neg_category_ids"]
    bad_gt = _write(tmp_path / "bad_gt.json", gt_without_neg)
    main = _cli_main()
    for gt_file, dt_file, expected in [
        (gt_path, bad_json, "not valid JSON"),
        (gt_path, bad_image, "record 3: image_id 424242 is not an image id"),
        (gt_path, bad_category, "record 2: category_id -5 is not a category id"),
        (gt_path, no_score, "record 0: no 'score' field"),
        (gt_path, wrong_size, "record 0: segmentation size [1, 1] differs"),
        (bad_gt, dt_path, "image record 2: no 'neg_category_ids' field"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--gt", gt_file, "--dt", dt_file, "--iou-type", "segm"])
        message = str(exit_info.value.code)
        assert (dt_file if gt_file == gt_path else gt_file) in message and expected in message, \
            message


# ---------------------------------------------------------------------------- model outputs
class LVISDataset(object):
    """The attributes of maskrcnn_benchmark's LVISDataset that evaluation reads."""

    def __init__(self, lvis_gt, label_to_cat):
        self.lvis = lvis_gt
        self.ids = sorted(lvis_gt.imgs)
        self.contiguous_category_id_to_json_id = label_to_cat

    def get_img_info(self, index):
        return self.lvis.imgs[self.ids[index]]


def _predictions_for(gt, dataset, rng, scale=1.5, extra=0):
    """Per image, a BoxList in a `scale`x larger input image: jittered annotations plus `extra`
    random boxes, with scores, labels and 28x28 mask probabilities."""
    cat_to_label = {c: l for l, c in dataset.contiguous_category_id_to_json_id.items()}
    predictions = []
    for img_id in dataset.ids:
        img = dataset.lvis.imgs[img_id]
        anns = dataset.lvis.img_ann_map.get(img_id, [])
        boxes = [[x, y, x + w - 1, y + h - 1] for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [cat_to_label[a["category_id"]] for a in anns]
        for _ in range(extra):
            x, y = rng.uniform(0, img["width"] / 2), rng.uniform(0, img["height"] / 2)
            boxes.append([x, y, x + rng.uniform(2, 30), y + rng.uniform(2, 30)])
            labels.append(int(rng.integers(1, len(cat_to_label) + 1)))
        size = (round(img["width"] * scale), round(img["height"] * scale))
        prediction = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * scale, size)
        prediction.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        prediction.add_field("scores", torch.tensor(rng.random(len(labels)), dtype=torch.float32))
        prediction.add_field("mask", torch.rand(len(labels), 1, 28, 28))
        predictions.append(prediction)
    return predictions


def _lvis_dataset(tmp_path, gt):
    path = _write(tmp_path / "val.json", gt)
    return LVISDataset(LVIS(path), {k + 1: c["id"] for k, c in enumerate(gt["categories"])})


def test_prepare_for_lvis(tmp_path):
    gt, _ = make_case(seed=13, num_images=5)
    dataset = _lvis_dataset(tmp_path, gt)
    predictions = _predictions_for(gt, dataset, np.random.default_rng(0), extra=320)

    boxes = prepare_for_lvis_detection(predictions, dataset)
    masks = prepare_for_lvis_segmentation(predictions, dataset)
    for index, (img_id, prediction) in enumerate(zip(dataset.ids, predictions)):
        img = dataset.lvis.imgs[img_id]
        mine = [r for r in boxes if r["image_id"] == img_id]
        assert len(mine) == min(300, len(prediction))
        scores = prediction.get_field("scores")
        top = torch.sort(scores, descending=True, stable=True)[1][:300]
        assert [r["score"] for r in mine] == scores[top].tolist()
        labels = prediction.get_field("labels")[top].tolist()
        assert [r["category_id"] for r in mine] == \
            [dataset.contiguous_category_id_to_json_id[l] for l in labels]
        ratio = torch.tensor([img["width"] / prediction.size[0],
                              img["height"] / prediction.size[1]])
        xyxy = prediction.bbox[top] * ratio.repeat(2)  # back to the original image's pixels
        expected = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2] + 1], dim=1)
        np.testing.assert_allclose([r["bbox"] for r in mine], expected.numpy(),
                                   rtol=1e-5, atol=1e-3)

        resized = prediction[top].resize((img["width"], img["height"]))
        pasted = Masker(threshold=0.5, padding=1)([resized.get_field("mask")], [resized])[0]
        mine_masks = [r for r in masks if r["image_id"] == img_id]
        assert len(mine_masks) == len(mine)
        decoded = mask_utils.decode([r["segmentation"] for r in mine_masks])
        np.testing.assert_array_equal(decoded.transpose(2, 0, 1), pasted[:, 0].numpy())


def _records_of_all(dataset, predictions, iou_type):
    """Result records of every prediction, none capped."""
    prepare = prepare_for_lvis_detection if iou_type == "bbox" else prepare_for_lvis_segmentation
    return json.loads(json.dumps(prepare(predictions, dataset, max_dets=-1)))


def test_evaluate_dispatches_lvis_and_writes_files(tmp_path, reference):
    gt, _ = make_case(seed=14, num_images=6)
    dataset = _lvis_dataset(tmp_path, gt)
    predictions = _predictions_for(gt, dataset, np.random.default_rng(1), extra=20)
    train = {"categories": [dict(c, instance_count=k * 3) for k, c in enumerate(gt["categories"])]}
    out = tmp_path / "eval"
    out.mkdir()
    groups = {"old": [c["id"] for c in gt["categories"][:8]],
              "all": [c["id"] for c in gt["categories"]]}
    metrics, results = evaluate(dataset, predictions, str(out), box_only=False,
                                iou_types=("bbox", "segm"), expected_results=(),
                                expected_results_sigma_tol=4, train_annotations=train,
                                category_groups=groups)
    written = json.loads((out / "metrics.json").read_text())
    for iou_type in ("bbox", "segm"):
        records = json.loads((out / "{}.json".format(iou_type)).read_text())
        assert records == results[iou_type]
        ref = reference(gt, records, iou_type)
        for key in SUMMARY_KEYS:
            assert abs(written[iou_type][key] - ref.results[key]) <= 1e-6
            assert abs(metrics[iou_type][key] - ref.results[key]) <= 1e-6
        assert abs(written[iou_type]["groups"]["old"] - _reference_ap(ref, groups["old"])) <= 1e-9
        assert set(written[iou_type]["bins"]) == set(PAPER_BINS)
    assert metrics["bbox"]["AP"] > 0.5  # the predictions include every annotation's box

    class PascalVOCDataset(object):
        pass

    with pytest.raises(NotImplementedError, match="PascalVOCDataset"):
        evaluate(PascalVOCDataset(), predictions, None)


def test_evaluate_reports_fixed_ap_of_every_prediction(tmp_path, reference):
    gt, _ = make_case(seed=15, num_images=4)
    dataset = _lvis_dataset(tmp_path, gt)
    predictions = _predictions_for(gt, dataset, np.random.default_rng(2), extra=320)
    assert max(len(p) for p in predictions) > 300
    train = {"categories": [dict(c, instance_count=k * 5) for k, c in enumerate(gt["categories"])]}
    groups = {"old": [c["id"] for c in gt["categories"][:8]]}
    out = tmp_path / "eval"
    out.mkdir()
    metrics, results = evaluate(dataset, predictions, str(out), box_only=False,
                                iou_types=("bbox", "segm"), train_annotations=train,
                                category_groups=groups, fixed_ap_dets_per_class=40)
    written = json.loads((out / "metrics.json").read_text())
    for iou_type in ("bbox", "segm"):
        # the standard results, taken from the uncapped ones, are those of the 300-capped path
        prepare = prepare_for_lvis_detection if iou_type == "bbox" else prepare_for_lvis_segmentation
        assert json.loads(json.dumps(results[iou_type])) == json.loads(json.dumps(prepare(predictions, dataset)))
        standard = reference(gt, results[iou_type], iou_type)
        assert abs(written[iou_type]["AP"] - standard.results["AP"]) <= 1e-6
        # Fixed AP reads every prediction (no per-image cap), not the 300-capped records.
        uncapped = _records_of_all(dataset, predictions, iou_type)
        assert len(uncapped) > len(results[iou_type])
        kept = json.loads((out / "{}_fixed_ap.json".format(iou_type)).read_text())
        assert kept == reference_top_per_category(uncapped, 40)
        ref = fixed_ap_reference(reference, gt, uncapped, iou_type, 40)
        for key in SUMMARY_KEYS[:9]:
            assert abs(written[iou_type]["fixed_AP"][key] - ref.results[key]) <= 1e-6, key
            assert abs(metrics[iou_type]["fixed_AP"][key] - ref.results[key]) <= 1e-6, key
        assert abs(written[iou_type]["fixed_AP"]["groups"]["old"]
                   - _reference_ap(ref, groups["old"])) <= 1e-9
        assert list(written[iou_type]["fixed_AP"]["bins"]) == list(PAPER_BINS)


@pytest.mark.parametrize("fixed_ap", [True, False])
def test_run_test_reports_fixed_ap_set_in_the_config(tmp_path, reference, fixed_ap):
    """TEST.LVIS_FIXED_AP(_DETS_PER_CLASS) reach the evaluator through run_test's options."""
    dets_per_class = 200  # fewer than the random weights' detections of each category
    catalog, fixture = write_fixture_catalog(tmp_path)
    cfg = tiny_cfg(catalog, tmp_path / "run", "MODEL.MASK_ON", False,
                   "MODEL.ROI_HEADS.SCORE_THRESH", 0.0, "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", 0,
                   "TEST.LVIS_MAX_DETS", 10, "TEST.LVIS_FIXED_AP", fixed_ap,
                   "TEST.LVIS_FIXED_AP_DETS_PER_CLASS", dets_per_class)
    torch.manual_seed(0)
    model = build_detection_model(cfg).eval()
    run_test(cfg, model, distributed=False)
    folder = tmp_path / "run" / "inference" / "fixture_test"
    written = json.loads((folder / "metrics.json").read_text())
    if not fixed_ap:
        assert "fixed_AP" not in written["bbox"]
        assert not (folder / "bbox_fixed_ap.json").exists()
        return
    predictions = torch.load(folder / "predictions.pth", weights_only=False)
    dataset = make_data_loader(cfg, is_train=False)[0].dataset
    uncapped = _records_of_all(dataset, predictions, "bbox")
    per_category = np.unique([r["category_id"] for r in uncapped], return_counts=True)[1]
    assert per_category.min() > dets_per_class  # the key limits every category
    assert json.loads((folder / "bbox_fixed_ap.json").read_text()) == \
        reference_top_per_category(uncapped, dets_per_class)
    ref = fixed_ap_reference(reference, fixture.data, uncapped, "bbox", dets_per_class)
    for key in SUMMARY_KEYS[:9]:
        assert abs(written["bbox"]["fixed_AP"][key] - ref.results[key]) <= 1e-6, key
    assert ref.results["AP"] > 0
    assert list(written["bbox"]["fixed_AP"]["bins"]) == list(PAPER_BINS)
