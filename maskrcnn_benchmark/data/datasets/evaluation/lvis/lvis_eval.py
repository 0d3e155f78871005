"""LVIS evaluation of a model's predictions: json results, FastLVISEval, metrics.json.

Mirrors upstream's coco_eval: predictions (one BoxList per dataset item, in the network's
input size) are resized to the original image, labels mapped back to LVIS category ids, masks
pasted and RLE-encoded; each image keeps its ``max_dets`` best detections across categories
(the LVIS protocol's cap). The results are scored with FastLVISEval, whose numbers are lvis-api's.
With ``fixed_ap_dets_per_class``, Fixed AP (fixed_ap.py) is computed beside them, from all the
predictions (no per-image cap) limited to that many per category over the dataset.
"""
import logging
import os
from collections import OrderedDict

from maskrcnn_benchmark.utils.miscellaneous import atomic_write_json
from ..coco.coco_eval import check_expected_results
from ..prediction_records import (
    box_records,
    mask_records,
    resize_to_original,
    top_scoring,
    top_scoring_records,
)
from .bins import group_ap, instance_count_bin_ap, per_category_ap, training_instance_counts
from .fast_eval import FastLVISEval
from .fixed_ap import evaluate_kept_results, top_per_category

LVIS_IOU_TYPES = ("bbox", "segm")


def _records(predictions, dataset, max_dets, to_records):
    results = []
    for index, prediction in enumerate(predictions):
        if len(prediction) == 0:
            continue
        prediction = top_scoring(prediction, max_dets)
        prediction, _, _ = resize_to_original(prediction, dataset, index)
        results.extend(to_records(prediction, dataset.ids[index],
                                  dataset.contiguous_category_id_to_json_id))
    return results


def prepare_for_lvis_detection(predictions, dataset, max_dets=300):
    """LVIS box results {image_id, category_id, bbox [x, y, w, h], score} of all images.

    Arguments:
        predictions (list[BoxList]): per dataset item, detections with "scores" and "labels".
        dataset: an LVISDataset (``ids``, ``get_img_info``, ``contiguous_category_id_to_json_id``).
        max_dets (int): detections kept per image, the highest scores (TEST.LVIS_MAX_DETS);
            < 0 keeps all.
    """
    return _records(predictions, dataset, max_dets, box_records)


def prepare_for_lvis_segmentation(predictions, dataset, max_dets=300):
    """LVIS mask results {image_id, category_id, segmentation (RLE), score} of all images.

    The predictions also need the field "mask": (N, 1, M, M) probabilities.
    """
    return _records(predictions, dataset, max_dets, mask_records)


def lvis_metrics(evaluator, instance_counts=None, category_groups=None):
    """The metrics of a run evaluator, as metrics.json holds them.

    Arguments:
        evaluator (FastLVISEval or lvis.LVISEval): after run().
        instance_counts (dict, optional): category id -> training instances; adds "bins".
        category_groups (dict, optional): group name -> category ids; adds "groups".

    Returns:
        OrderedDict: LVISEval's summary keys (AP, AP50, AP75, APs, APm, APl, APr, APc, APf,
        AR@300, ARs@300, ARm@300, ARl@300; 0..1, -1 when undefined), then "bins" {label: AP},
        "groups" {name: AP} and "per_category_AP" {category id: AP}.
    """
    metrics = OrderedDict((key, float(value)) for key, value in evaluator.results.items())
    if instance_counts is not None:
        metrics["bins"] = instance_count_bin_ap(evaluator, instance_counts)
    if category_groups is not None:
        metrics["groups"] = group_ap(evaluator, OrderedDict(category_groups))
    metrics["per_category_AP"] = per_category_ap(evaluator)
    return metrics


def do_lvis_evaluation(
    dataset,
    predictions,
    output_folder,
    iou_types=("bbox",),
    box_only=False,
    max_dets=300,
    train_annotations=None,
    category_groups=None,
    expected_results=(),
    expected_results_sigma_tol=4,
    category_ids=None,
    fixed_ap_dets_per_class=0,
    inference_dets_per_img=None,
):
    """Evaluate predictions on an LVISDataset (``dataset.lvis``: its lvis.LVIS ground truth).

    Writes ``<iou_type>.json`` (the results) and ``metrics.json`` ({iou_type: lvis_metrics})
    into output_folder, when given; with Fixed AP also ``<iou_type>_fixed_ap.json`` (its
    results) and, in each iou type's metrics, "fixed_AP": lvis_metrics of Fixed AP.

    Arguments:
        train_annotations (str or dict, optional): training json whose instance counts give the
            paper's bins.
        category_groups (dict, optional): group name -> category ids (e.g. LST's old / new / all).
        category_ids (list[int], optional): evaluate these categories only (e.g. the classes an
            LST phase has seen): detections of others are ignored, and AP, APr/c/f and the bins
            are over these categories. None: every category of the ground truth.
        fixed_ap_dets_per_class (int): > 0: also Fixed AP with this many detections per
            category (Dave et al. 2021: 10,000; TEST.LVIS_FIXED_AP_DETS_PER_CLASS).
        inference_dets_per_img (int, optional): the predictions' per-image cap
            (MODEL.ROI_HEADS.DETECTIONS_PER_IMG, 0 = none), for Fixed AP's log; None = unknown.

    Returns:
        (OrderedDict iou_type -> metrics, dict iou_type -> list of result records)
    """
    logger = logging.getLogger("maskrcnn_benchmark.inference")
    if box_only:
        raise NotImplementedError("LVIS evaluation of RPN proposals (box_only) is not supported; "
                                  "evaluate the full detector (MODEL.RPN_ONLY False)")
    unknown = [t for t in iou_types if t not in LVIS_IOU_TYPES]
    if unknown:
        raise ValueError("LVIS evaluation supports iou types {}, got {}".format(
            LVIS_IOU_TYPES, unknown))
    prepare = {"bbox": prepare_for_lvis_detection, "segm": prepare_for_lvis_segmentation}
    instance_counts = training_instance_counts(train_annotations) if train_annotations else None

    all_results, metrics = {}, OrderedDict()
    for iou_type in iou_types:
        logger.info("Preparing %s results for LVIS", iou_type)
        # With Fixed AP, every detection is encoded once; the capped results are taken from them.
        uncapped = prepare[iou_type](predictions, dataset, -1) if fixed_ap_dets_per_class > 0 else None
        results = (prepare[iou_type](predictions, dataset, max_dets) if uncapped is None
                   else top_scoring_records(uncapped, max_dets))
        all_results[iou_type] = results
        if output_folder:
            atomic_write_json(results, os.path.join(output_folder, iou_type + ".json"))
        logger.info("Evaluating %s (%d results)", iou_type, len(results))
        if not results:
            logger.warning("The model made no %s detection on %d images: every AP is 0",
                           iou_type, len(predictions))
        evaluator = FastLVISEval(dataset.lvis, results, iou_type, max_dets=max_dets)
        if category_ids is not None:
            evaluator.params.cat_ids = sorted(category_ids)
        evaluator.run()
        for line in evaluator.summary_lines():
            logger.info(line)
        metrics[iou_type] = lvis_metrics(evaluator, instance_counts, category_groups)
        if instance_counts is not None:
            logger.info("%s AP per training instance-count bin: %s", iou_type, ", ".join(
                "{} {:.4f}".format(k, v) for k, v in metrics[iou_type]["bins"].items()))
        if fixed_ap_dets_per_class > 0:
            metrics[iou_type]["fixed_AP"] = _fixed_ap(
                dataset, uncapped, iou_type, fixed_ap_dets_per_class, output_folder,
                instance_counts, category_groups, category_ids, inference_dets_per_img)
    if output_folder:
        atomic_write_json(metrics, os.path.join(output_folder, "metrics.json"))
    check_expected_results(metrics, expected_results, expected_results_sigma_tol)
    return metrics, all_results


def _fixed_ap(dataset, results, iou_type, dets_per_class, output_folder, instance_counts,
              category_groups, category_ids, inference_dets_per_img):
    """lvis_metrics of Fixed AP on all the ``results`` (no per-image cap); writes
    <iou_type>_fixed_ap.json."""
    logger = logging.getLogger("maskrcnn_benchmark.inference")
    kept = top_per_category(results, dets_per_class, inference_dets_per_img) if results else []
    if output_folder:
        atomic_write_json(kept, os.path.join(output_folder, iou_type + "_fixed_ap.json"))
    logger.info("Evaluating %s Fixed AP (%d results, at most %d per category)", iou_type,
                len(results), dets_per_class)
    evaluator = evaluate_kept_results(dataset.lvis, kept, iou_type, category_ids)
    for line in evaluator.summary_lines():
        logger.info("Fixed AP:%s", line)
    return lvis_metrics(evaluator, instance_counts, category_groups)
