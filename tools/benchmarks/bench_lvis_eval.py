"""Times FastLVISEval against lvis-api's LVISEval on a synthetic LVIS-like validation set.

    python tools/benchmarks/bench_lvis_eval.py [--images 5000] [--dets-per-image 300] [--small]

The ground truth (seeded) has 1,000 categories with long-tailed frequencies (r / c / f by rank),
about 10 annotations per image over a few positive categories, negative and not-exhaustive
category lists, and polygon masks; each image gets 260 to 340 detections (about half the images
exceed the 300 cap): jittered copies of its annotations, detections of its negative categories
and of random categories. Box results carry only "bbox", mask results only "segmentation"
(compressed RLE), as the model-output side writes them. Both evaluators get the same in-memory
ground truth (lvis.LVIS) and results list; LVISEval runs with np.float restored (lvis 0.5.3
needs it). Every metric and the full precision array must agree before times are reported;
the ratio is LVISEval / ours (> 1: ours is faster). --small: 500 images.
"""
import argparse
import copy
import json
import logging
import os
import platform
import tempfile
import time

import numpy as np
import pycocotools.mask as mask_utils
from lvis import LVIS

from maskrcnn_benchmark.data.datasets.evaluation.lvis.fast_eval import FastLVISEval

NUM_CATEGORIES = 1000


def ellipse_polygons(boxes, rng, points=12):
    """(N, 4) xywh boxes -> N jagged ellipse polygons [x0, y0, x1, y1, ...] inside the boxes."""
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)[None]
    angles = angles + rng.uniform(0, 1, (len(boxes), 1))
    radius = rng.uniform(0.8, 1.0, (len(boxes), points))
    half_w, half_h = boxes[:, 2:3] / 2, boxes[:, 3:4] / 2
    xs = boxes[:, 0:1] + half_w + radius * np.cos(angles) * half_w
    ys = boxes[:, 1:2] + half_h + radius * np.sin(angles) * half_h
    return np.stack([xs, ys], axis=2).reshape(len(boxes), -1).tolist()


def random_boxes(rng, num, width, height):
    """(num, 4) xywh boxes with log-uniform sides of 8..300 pixels inside a width x height image."""
    w = np.minimum(np.exp(rng.uniform(np.log(8), np.log(300), num)), width - 1)
    h = np.minimum(np.exp(rng.uniform(np.log(8), np.log(300), num)), height - 1)
    return np.stack([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h], axis=1)


def jitter(rng, boxes, amount=0.15):
    """Boxes moved and resized by up to ``amount`` of their size."""
    noise = rng.uniform(-amount, amount, boxes.shape)
    out = boxes.copy()
    out[:, :2] += noise[:, :2] * boxes[:, 2:]
    out[:, 2:] *= 1 + noise[:, 2:]
    return out


def rles(polygons, height, width):
    """Compressed RLEs with str counts (as in a results json)."""
    encoded = mask_utils.frPyObjects(polygons, height, width) if polygons else []
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded


def make_case(num_images, dets_per_image, seed):
    """(ground-truth dict, box results, mask results) of a synthetic LVIS-like validation set."""
    rng = np.random.default_rng(seed)
    popularity = np.sort(rng.pareto(1.2, NUM_CATEGORIES) + 0.01)[::-1]
    popularity /= popularity.sum()
    rank_fraction = np.arange(NUM_CATEGORIES) / NUM_CATEGORIES
    frequency = np.where(rank_fraction < 0.26, "f", np.where(rank_fraction < 0.63, "c", "r"))
    category_ids = np.arange(1, NUM_CATEGORIES + 1)
    categories = [{"id": int(c), "name": "category_{}".format(c), "frequency": str(f)}
                  for c, f in zip(category_ids, frequency)]

    images, annotations, box_results, mask_results = [], [], [], []
    for image_id in range(1, num_images + 1):
        width, height = int(rng.integers(400, 641)), int(rng.integers(400, 641))
        positive = rng.choice(category_ids, 1 + rng.poisson(2.5), replace=False, p=popularity)
        others = np.setdiff1d(category_ids, positive)
        negative = rng.choice(others, rng.poisson(6), replace=False)
        not_exhaustive = positive[rng.random(len(positive)) < 0.15]
        images.append({"id": image_id, "width": width, "height": height,
                       "neg_category_ids": negative.tolist(),
                       "not_exhaustive_category_ids": not_exhaustive.tolist()})

        gt_cats = np.repeat(positive, 1 + rng.poisson(1.5, len(positive)))
        gt_boxes = random_boxes(rng, len(gt_cats), width, height)
        gt_rles = mask_utils.frPyObjects(ellipse_polygons(gt_boxes, rng), height, width)
        for cat, box, poly_rle in zip(gt_cats.tolist(), gt_boxes.tolist(), gt_rles):
            x, y, w, h = box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                "bbox": box, "area": float(mask_utils.area(poly_rle)),
                "segmentation": [ellipse_polygons(np.array([box]), rng)[0]],
            })

        copies = 1 + rng.poisson(3, len(gt_cats))
        near_boxes = jitter(rng, np.repeat(gt_boxes, copies, axis=0))
        near_cats = np.repeat(gt_cats, copies)
        confused = rng.random(len(near_cats)) < 0.1
        near_cats[confused] = rng.choice(category_ids, int(confused.sum()))
        num_dets = int(rng.integers(dets_per_image - 40, dets_per_image + 41))
        num_near = min(len(near_cats), num_dets)
        num_negative = min(rng.poisson(10) if len(negative) else 0, num_dets - num_near)
        num_random = num_dets - num_near - num_negative
        det_cats = np.concatenate([near_cats[:num_near], rng.choice(negative, num_negative)
                                   if num_negative else np.zeros(0, np.int64),
                                   rng.choice(category_ids, num_random, p=popularity)])
        det_boxes = np.concatenate([near_boxes[:num_near],
                                    random_boxes(rng, num_negative + num_random, width, height)])
        det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], 1.0)
        scores = np.concatenate([rng.beta(4, 2, num_near), rng.beta(1, 5, num_dets - num_near)])
        det_rles = rles(ellipse_polygons(det_boxes, rng), height, width)
        for cat, box, score, rle in zip(det_cats.tolist(), det_boxes.tolist(), scores.tolist(),
                                        det_rles):
            box_results.append({"image_id": image_id, "category_id": cat, "bbox": box,
                                "score": score})
            mask_results.append({"image_id": image_id, "category_id": cat,
                                 "segmentation": rle, "score": score})

    ground_truth = {"images": images, "annotations": annotations, "categories": categories}
    return ground_truth, box_results, mask_results


def time_lvis_api(lvis_gt, results, iou_type):
    """(seconds, LVISEval) of lvis-api on copies of the ground truth and results."""
    from lvis import LVISEval
    if not hasattr(np, "float"):
        np.float = float  # lvis 0.5.3 still uses the alias removed in NumPy 1.24
    lvis_gt = copy.deepcopy(lvis_gt)  # LVISEval rewrites the annotations' segmentations
    results = copy.deepcopy(results)  # and LVISResults adds fields to every result
    start = time.perf_counter()
    evaluator = LVISEval(lvis_gt, results, iou_type)
    evaluator.run()
    return time.perf_counter() - start, evaluator


def time_ours(lvis_gt, results, iou_type):
    start = time.perf_counter()
    evaluator = FastLVISEval(lvis_gt, results, iou_type)
    evaluator.run()
    return time.perf_counter() - start, evaluator


def check_agreement(ours, reference, iou_type):
    for key, value in reference.results.items():
        if abs(ours.results[key] - value) > 1e-6:
            raise AssertionError("{} {}: ours {} vs LVISEval {}".format(
                iou_type, key, ours.results[key], value))
    if not np.array_equal(ours.eval["precision"], reference.eval["precision"]):
        raise AssertionError("{}: precision arrays differ".format(iou_type))
    if not np.array_equal(ours.eval["recall"], reference.eval["recall"]):
        raise AssertionError("{}: recall arrays differ".format(iou_type))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets-per-image", type=int, default=300)
    parser.add_argument("--small", action="store_true", help="500 images (a quick run)")
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"],
                        choices=["bbox", "segm"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("lvis").setLevel(logging.ERROR)
    num_images = 500 if args.small else args.images

    start = time.perf_counter()
    ground_truth, box_results, mask_results = make_case(num_images, args.dets_per_image, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "val.json")
        with open(path, "w") as f:
            json.dump(ground_truth, f)
        lvis_gt = LVIS(path)
    print("machine: {}, {} logical CPUs, Python {}, NumPy {}; data generated in {:.0f} s".format(
        platform.machine(), os.cpu_count(), platform.python_version(), np.__version__,
        time.perf_counter() - start))
    print("case: {:,} images, {:,} annotations, {:,} categories, {:,} results (seed {})".format(
        num_images, len(ground_truth["annotations"]), NUM_CATEGORIES, len(box_results),
        args.seed))
    print()
    print("| iou type | LVISEval (s) | ours (s) | LVISEval / ours | AP (both) |")
    print("|---|---:|---:|---:|---:|")
    results_by_type = {"bbox": box_results, "segm": mask_results}
    for iou_type in args.iou_types:
        results = results_by_type[iou_type]
        ours_time, ours = time_ours(lvis_gt, results, iou_type)
        ref_time, reference = time_lvis_api(lvis_gt, results, iou_type)
        check_agreement(ours, reference, iou_type)
        print("| {} | {:.1f} | {:.2f} | {:.1f}x | {:.4f} |".format(
            iou_type, ref_time, ours_time, ref_time / ours_time, ours.results["AP"]), flush=True)


if __name__ == "__main__":
    main()
