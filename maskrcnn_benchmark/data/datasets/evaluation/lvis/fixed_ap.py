"""Fixed AP (Dave et al., "Evaluating Large-Vocabulary Object Detectors: The Devil is in the
Details", 2021, Sec. 3): the LVIS protocol on the ``dets_per_class`` highest-scoring results of
each category over the whole dataset (10,000 on LVIS), with no per-image cap.

Under the standard protocol an image keeps its 300 best detections across categories, so a
category's AP depends on how its scores compare with other categories'; Fixed AP removes that
dependence. The results must come from an inference without a per-image cap
(MODEL.ROI_HEADS.DETECTIONS_PER_IMG 0, a low SCORE_THRESH), or Fixed AP is artificially low.
"""
import logging

import numpy as np

from .fast_eval import FastLVISEval

FIXED_AP_DETS_PER_CLASS = 10000  # Dave et al. 2021, Sec. 3, for LVIS

logger = logging.getLogger(__name__)


def top_per_category(results, dets_per_class=FIXED_AP_DETS_PER_CLASS, inference_dets_per_img=None):
    """The ``dets_per_class`` highest-scoring results of each category, in their input order.

    Arguments:
        results (list[dict]): LVIS result records (category_id, score, ...).
        dets_per_class (int): > 0. Ties at the limit keep the records listed first.
        inference_dets_per_img (int, optional): the per-image cap of the inference that made the
            results (MODEL.ROI_HEADS.DETECTIONS_PER_IMG; 0 = none), None when unknown (a results
            file). Only for the message about categories with fewer than ``dets_per_class``
            results: without a cap they simply have no more above the score threshold.

    Returns:
        list[dict]: the kept records (the same objects).
    """
    if dets_per_class <= 0:
        raise ValueError("dets_per_class must be positive, got {}".format(dets_per_class))
    category = np.fromiter((r["category_id"] for r in results), np.int64, len(results))
    score = np.fromiter((r["score"] for r in results), np.float64, len(results))
    order = np.lexsort((np.arange(len(results)), -score, category))
    sorted_category = category[order]
    first = np.searchsorted(sorted_category, sorted_category, side="left")
    kept = np.sort(order[np.arange(len(order)) - first < dets_per_class])
    counts = np.bincount(np.unique(category, return_inverse=True)[1]) if len(results) else []
    short = int(np.sum(np.asarray(counts) < dets_per_class))
    if short and inference_dets_per_img == 0:
        logger.info("Fixed AP: %d of the %d detected categories have fewer than %d detections: all "
                    "they have above the score threshold (MODEL.ROI_HEADS.SCORE_THRESH), as the "
                    "inference had no per-image cap", short, len(counts), dets_per_class)
    elif short:
        cap = "" if inference_dets_per_img is None else " (this one kept {} per image)".format(
            inference_dets_per_img)
        logger.warning("Fixed AP: %d of the %d detected categories have fewer than %d "
                       "detections; infer without a per-image cap%s (MODEL.ROI_HEADS."
                       "DETECTIONS_PER_IMG 0, a low SCORE_THRESH) for the protocol's full lists",
                       short, len(counts), dets_per_class, cap)
    return [results[i] for i in kept.tolist()]


def fixed_ap_evaluator(lvis_gt, results, iou_type, dets_per_class=FIXED_AP_DETS_PER_CLASS,
                       category_ids=None):
    """A run FastLVISEval of Fixed AP: top ``dets_per_class`` per category, no per-image cap.

    Arguments:
        lvis_gt (lvis.LVIS or str), results (list[dict]), iou_type (str): as FastLVISEval.
        category_ids (list[int], optional): evaluate these categories only.

    Returns:
        FastLVISEval after run(): its ``results`` hold AP, AP50, ..., APr/c/f and AR@-1.
    """
    return evaluate_kept_results(lvis_gt, top_per_category(results, dets_per_class), iou_type, category_ids)


def evaluate_kept_results(lvis_gt, kept, iou_type, category_ids=None):
    """fixed_ap_evaluator on results already limited per category (top_per_category's ``kept``)."""
    evaluator = FastLVISEval(lvis_gt, kept, iou_type, max_dets=-1)
    if category_ids is not None:
        evaluator.params.cat_ids = sorted(category_ids)
    evaluator.run()
    return evaluator
