"""COCO evaluation of a model's predictions through pycocotools' COCOeval (upstream's coco_eval).

Box and mask results are written as COCO json and scored with COCOeval; box_only models
(RPN only) get the proposal recall of evaluate_box_proposals instead. Metrics go to COCOResults
and, when an output folder is given, to metrics.json (plus upstream's coco_results.pth /
box_proposals.pth).
"""
import logging
import os
import tempfile
from collections import OrderedDict

import torch

from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.boxlist_ops import boxlist_iou

from maskrcnn_benchmark.utils.miscellaneous import atomic_torch_save, atomic_write_json
from ..prediction_records import box_records, mask_records, resize_to_original

logger = logging.getLogger("maskrcnn_benchmark.inference")


def do_coco_evaluation(
    dataset,
    predictions,
    box_only,
    output_folder,
    iou_types,
    expected_results,
    expected_results_sigma_tol,
):
    """Evaluate predictions (one BoxList per dataset item) on a COCODataset.

    Returns:
        box_only: COCOResults of the proposal recall; else (COCOResults, dict iou_type ->
        list of result records).
    """
    if box_only:
        logger.info("Evaluating bbox proposals")
        results = COCOResults("box_proposal")
        suffixes = OrderedDict([("all", ""), ("small", "s"), ("medium", "m"), ("large", "l")])
        for limit in (100, 1000):
            for area, suffix in suffixes.items():
                stats = evaluate_box_proposals(predictions, dataset, area=area, limit=limit)
                key = "AR{}@{:d}".format(suffix, limit)
                results.results["box_proposal"][key] = stats["ar"].item()
        logger.info(results)
        check_expected_results(results, expected_results, expected_results_sigma_tol)
        if output_folder:
            atomic_torch_save(results, os.path.join(output_folder, "box_proposals.pth"))
            atomic_write_json(results.results, os.path.join(output_folder, "metrics.json"))
        return results

    prepare = {"bbox": prepare_for_coco_detection, "segm": prepare_for_coco_segmentation}
    unknown = [t for t in iou_types if t not in prepare]
    if unknown:
        raise ValueError("COCO evaluation supports iou types {}, got {}".format(
            tuple(prepare), unknown))
    logger.info("Preparing results for COCO format")
    coco_results = {iou_type: prepare[iou_type](predictions, dataset) for iou_type in iou_types}

    results = COCOResults(*iou_types)
    logger.info("Evaluating predictions")
    for iou_type in iou_types:
        if output_folder:
            coco_eval = evaluate_predictions_on_coco(
                dataset.coco, coco_results[iou_type],
                os.path.join(output_folder, iou_type + ".json"), iou_type)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                coco_eval = evaluate_predictions_on_coco(
                    dataset.coco, coco_results[iou_type], os.path.join(tmp, iou_type + ".json"),
                    iou_type)
        results.update(coco_eval)
    logger.info(results)
    check_expected_results(results, expected_results, expected_results_sigma_tol)
    if output_folder:
        atomic_torch_save(results, os.path.join(output_folder, "coco_results.pth"))
        atomic_write_json(results.results, os.path.join(output_folder, "metrics.json"))
    return results, coco_results


def _coco_records(predictions, dataset, to_records):
    records = []
    for index, prediction in enumerate(predictions):
        if len(prediction) == 0:
            continue
        prediction, _, _ = resize_to_original(prediction, dataset, index)
        records.extend(to_records(prediction, dataset.id_to_img_map[index],
                                  dataset.contiguous_category_id_to_json_id))
    return records


def prepare_for_coco_detection(predictions, dataset):
    """COCO box results {image_id, category_id, bbox [x, y, w, h], score} of all images."""
    return _coco_records(predictions, dataset, box_records)


def prepare_for_coco_segmentation(predictions, dataset):
    """COCO mask results {image_id, category_id, segmentation (RLE), score}; masks pasted with
    Masker(threshold=0.5, padding=1) unless already of the image's size."""
    return _coco_records(predictions, dataset, mask_records)


# Area ranges of evaluate_box_proposals, in pixels^2 (as Detectron's).
PROPOSAL_AREA_RANGES = OrderedDict([
    ("all", (0 ** 2, 1e5 ** 2)),
    ("small", (0 ** 2, 32 ** 2)),
    ("medium", (32 ** 2, 96 ** 2)),
    ("large", (96 ** 2, 1e5 ** 2)),
    ("96-128", (96 ** 2, 128 ** 2)),
    ("128-256", (128 ** 2, 256 ** 2)),
    ("256-512", (256 ** 2, 512 ** 2)),
    ("512-inf", (512 ** 2, 1e5 ** 2)),
])


def _greedy_coverage(overlaps):
    """IoU with which each ground-truth box is covered, assigning proposals greedily.

    Repeatedly takes the best-covered remaining ground truth and its best proposal, then
    removes both (Detectron's proposal recall).

    Arguments:
        overlaps (Tensor): (P proposals, G ground truths) IoUs.

    Returns:
        (G,) tensor; entries past min(P, G) stay 0.
    """
    overlaps = overlaps.clone()
    coverage = torch.zeros(overlaps.shape[1])
    for j in range(min(overlaps.shape)):
        best_per_gt, best_proposal = overlaps.max(dim=0)
        gt_overlap, gt_index = best_per_gt.max(dim=0)
        coverage[j] = gt_overlap
        overlaps[best_proposal[gt_index], :] = -1
        overlaps[:, gt_index] = -1
    return coverage


def evaluate_box_proposals(predictions, dataset, thresholds=None, area="all", limit=None):
    """Proposal recall: a fast approximation of COCO's AR (as upstream, from Detectron).

    Arguments:
        predictions (list[BoxList]): proposals per dataset item, with the field "objectness".
        area (str): a key of PROPOSAL_AREA_RANGES; ground truths outside it are left out.
        limit (int, optional): proposals kept per image, by objectness.
        thresholds (Tensor, optional): IoU thresholds; default 0.5:0.95 step 0.05.

    Returns:
        dict with "ar" (mean recall over thresholds), "recalls", "thresholds", "gt_overlaps"
        (sorted coverage IoU per ground truth) and "num_pos".
    """
    if area not in PROPOSAL_AREA_RANGES:
        raise ValueError("Unknown area range: {}; use one of {}".format(
            area, list(PROPOSAL_AREA_RANGES)))
    low, high = PROPOSAL_AREA_RANGES[area]
    gt_overlaps, num_pos = [], 0
    for index, prediction in enumerate(predictions):
        prediction, width, height = resize_to_original(prediction, dataset, index)
        order = prediction.get_field("objectness").sort(descending=True)[1]
        prediction = prediction[order]

        anns = dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=dataset.id_to_img_map[index]))
        anns = [a for a in anns if a["iscrowd"] == 0]
        if not anns:
            continue
        gt_boxes = BoxList(torch.as_tensor([a["bbox"] for a in anns]).reshape(-1, 4),
                           (width, height), mode="xywh").convert("xyxy")
        gt_areas = torch.as_tensor([a["area"] for a in anns])
        gt_boxes = gt_boxes[(gt_areas >= low) & (gt_areas <= high)]
        num_pos += len(gt_boxes)
        if len(gt_boxes) == 0 or len(prediction) == 0:
            continue
        if limit is not None:
            prediction = prediction[:limit]
        gt_overlaps.append(_greedy_coverage(boxlist_iou(prediction, gt_boxes)))

    gt_overlaps = torch.sort(torch.cat(gt_overlaps) if gt_overlaps else torch.zeros(0))[0]
    if thresholds is None:
        thresholds = torch.arange(0.5, 0.95 + 1e-5, 0.05, dtype=torch.float32)
    recalls = torch.stack([(gt_overlaps >= t).float().sum() / float(max(num_pos, 1))
                           for t in thresholds])
    return {"ar": recalls.mean(), "recalls": recalls, "thresholds": thresholds,
            "gt_overlaps": gt_overlaps, "num_pos": num_pos}


def evaluate_predictions_on_coco(coco_gt, coco_results, json_result_file, iou_type="bbox"):
    """Write ``coco_results`` to ``json_result_file`` and score them with COCOeval.

    Returns:
        the COCOeval after summarize(), or None when there are no results (nothing to score).
    """
    from pycocotools.cocoeval import COCOeval

    atomic_write_json(coco_results, json_result_file)
    if not coco_results:
        logger.warning("No %s results to evaluate; the metrics stay -1", iou_type)
        return None
    coco_dt = coco_gt.loadRes(str(json_result_file))
    coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


class COCOResults(object):
    """COCOeval's summary metrics per task; -1 until a task is evaluated."""

    METRICS = {
        "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
        "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
        "box_proposal": [
            "AR@100", "ARs@100", "ARm@100", "ARl@100",
            "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000",
        ],
    }

    def __init__(self, *iou_types):
        unknown = [t for t in iou_types if t not in self.METRICS]
        if unknown:
            raise ValueError("unknown COCO tasks {}; use {}".format(unknown, list(self.METRICS)))
        self.results = OrderedDict(
            (iou_type, OrderedDict((metric, -1) for metric in self.METRICS[iou_type]))
            for iou_type in iou_types)

    def update(self, coco_eval):
        """Copy a summarized COCOeval's stats into its task's metrics (None: no change)."""
        if coco_eval is None:
            return
        task = coco_eval.params.iouType
        for metric, value in zip(self.METRICS[task], coco_eval.stats):
            self.results[task][metric] = float(value)

    def __repr__(self):
        lines = [""]
        for task, metrics in self.results.items():
            lines.append("Task: {}".format(task))
            lines.append(", ".join(metrics.keys()))
            lines.append(", ".join("{:.4f}".format(v) for v in metrics.values()))
        return "\n".join(lines) + "\n"


def check_expected_results(results, expected_results, sigma_tol):
    """Log PASS / FAIL for each (task, metric, (mean, std)) in expected_results.

    Arguments:
        results: COCOResults, or a dict task -> {metric: value} (LVIS metrics).
        sigma_tol (float): a value passes within mean +- sigma_tol * std (exclusive).
    """
    if not expected_results:
        return
    table = results.results if isinstance(results, COCOResults) else results
    for task, metric, (mean, std) in expected_results:
        actual = table[task][metric]
        low, high = mean - sigma_tol * std, mean + sigma_tol * std
        message = ("{} > {} sanity check (actual vs. expected): {:.3f} vs. mean={:.4f}, std={:.4}, "
                   "range=({:.4f}, {:.4f})").format(task, metric, actual, mean, std, low, high)
        if low < actual < high:
            logger.info("PASS: " + message)
        else:
            logger.error("FAIL: " + message)
