"""A fast evaluator of LVIS results whose numbers are identical to lvis-api's LVISEval.

LVISEval (``lvis`` 0.5.3) loops in Python over every (category, area range, image) triple and
every detection; on 5,000 images x 300 detections that takes minutes. FastLVISEval applies the
same federated protocol with array operations:

* results are capped to the ``max_dets`` highest-scoring detections per image across categories
  (LVISResults.limit_dets_per_image: stable sort, ties keep the input order);
* the evaluated categories are ``params.cat_ids`` (all by default; set it before evaluate() to
  evaluate a subset, in any order, as with LVISEval): detections of other categories are
  dropped, and APr/c/f and the bins cover the evaluated categories only;
* a category is evaluated on an image only if the image is in its positive set (it has a
  ground-truth annotation of it) or in its negative set (``neg_category_ids``); detections of
  other categories are dropped; so are annotations and detections of area 0 (LVIS.get_ann_ids);
* unmatched detections of a category in the image's ``not_exhaustive_category_ids`` are ignored;
* IoUs come from pycocotools.mask.iou, once per image, for boxes or RLE masks;
* the greedy matching of LVISEval.evaluate_img (best IoU, last ground truth on ties, ignored
  ground truths only when no regular one is free) runs for all images and categories at once,
  one detection rank at a time;
* precision / recall at 101 recall points and 10 IoU thresholds follow LVISEval.accumulate
  operation by operation, so ``eval["precision"]`` and ``eval["recall"]`` are equal to
  LVISEval's arrays, and ``results`` holds the same keys and values.
"""
import json
import logging
from collections import OrderedDict

import numpy as np
import pycocotools.mask as mask_utils
from lvis import LVIS
from lvis.eval import Params

logger = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")


def _load_gt(lvis_gt):
    if isinstance(lvis_gt, LVIS):
        return lvis_gt
    if isinstance(lvis_gt, str):
        return LVIS(lvis_gt)
    raise TypeError("lvis_gt must be an lvis.LVIS or a path to an LVIS json, got {}".format(
        type(lvis_gt).__name__))


def _load_results(lvis_dt):
    if isinstance(lvis_dt, str):
        with open(lvis_dt) as f:
            lvis_dt = json.load(f)
    if not isinstance(lvis_dt, list):
        raise TypeError("LVIS results must be a list of dicts or the path to a json list, got {}"
                        .format(type(lvis_dt).__name__))
    return lvis_dt


def _pair_keys(image_index, category_index, num_categories):
    """One int64 key per (image, category) pair."""
    return np.asarray(image_index, np.int64) * num_categories + np.asarray(category_index, np.int64)


def _rle_of_segmentation(segmentation, height, width):
    """A polygon list, an uncompressed or a compressed RLE -> compressed RLE (LVIS.ann_to_rle)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def _mask_areas(rles):
    """(N,) float64 pixel areas of compressed RLEs.

    pycocotools.mask.area builds a uint8 array holding the list's length, which overflows on
    NumPy 2 for 256 masks or more; hence the chunks.
    """
    chunk = 255
    areas = [mask_utils.area(rles[i:i + chunk]) for i in range(0, len(rles), chunk)]
    return np.concatenate(areas).astype(np.float64) if areas else np.zeros(0, np.float64)


def _box_polygon(box):
    """[x, y, w, h] -> the rectangle polygon LVISResults gives a result without segmentation."""
    x1, y1, w, h = box
    x2, y2 = x1 + w, y1 + h
    return [x1, y1, x1, y2, x2, y2, x2, y1]


def _segment_starts(sorted_keys):
    """Start positions of the runs of equal values of a sorted 1-D array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _rank_in_segments(sorted_keys):
    """Position of each element within its run of equal values (sorted_keys sorted)."""
    starts = _segment_starts(sorted_keys)
    lengths = np.diff(np.r_[starts, len(sorted_keys)])
    return np.arange(len(sorted_keys)) - np.repeat(starts, lengths)


def _last_best(mask, iou, starts):
    """Per segment of the last axis, the last position with the largest IoU among ``mask``.

    Arguments:
        mask: (..., P) bool, the candidates.
        iou: (P,) float64 IoUs of the P pairs.
        starts: (S,) start of each segment (one detection's pairs) along P.

    Returns:
        (..., S) int64 position in 0..P-1, or -1 where the segment has no candidate.
    """
    key = np.where(mask, iou, -1.0)
    best = np.maximum.reduceat(key, starts, axis=-1)
    lengths = np.diff(np.r_[starts, mask.shape[-1]])
    is_best = mask & (key == np.repeat(best, lengths, axis=-1))
    position = np.where(is_best, np.arange(mask.shape[-1]), -1)
    return np.maximum.reduceat(position, starts, axis=-1)


class FastLVISEval(object):
    """Evaluate LVIS results (bbox or segm) exactly as lvis.LVISEval does, much faster.

    Arguments:
        lvis_gt (lvis.LVIS or str): ground truth, or the path of its json.
        lvis_dt (list[dict] or str): results {image_id, category_id, score, bbox [x, y, w, h]
            and/or segmentation (compressed RLE)}, or the path of their json. Not modified.
        iou_type (str): "bbox" or "segm".
        max_dets (int): detections kept per image across categories (LVIS: 300); < 0 keeps all.

    After run(): ``eval["precision"]`` (T=10 IoUs, R=101 recalls, K categories, A=4 areas),
    ``eval["recall"]`` (T, K, A), with -1 where a category has no ground truth in an area range;
    ``results``: OrderedDict AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR@300, ARs@300,
    ARm@300, ARl@300, on LVISEval's 0..1 scale; ``params`` as lvis.eval.Params (set
    ``params.cat_ids`` before evaluate() to evaluate a subset of the categories, K of them, in
    that order); ``freq_groups`` the category indices (into params.cat_ids) of frequencies r,
    c, f.
    """

    def __init__(self, lvis_gt, lvis_dt, iou_type="segm", max_dets=300):
        if iou_type not in IOU_TYPES:
            raise ValueError("iou_type must be one of {}, got {!r}".format(IOU_TYPES, iou_type))
        self.lvis_gt = _load_gt(lvis_gt)
        self.results_list = _load_results(lvis_dt)
        self.params = Params(iou_type=iou_type)
        self.params.max_dets = max_dets
        self.params.img_ids = sorted(self.lvis_gt.get_img_ids())
        self.params.cat_ids = sorted(self.lvis_gt.get_cat_ids())
        self.eval = {}
        self.results = OrderedDict()

    # ------------------------------------------------------------------ ground truth
    def _prepare_gt(self):
        """Ground-truth arrays, in LVISEval's order: images by id, annotations as in the json."""
        gt = self.lvis_gt
        self._img_ids = np.unique(np.asarray(self.params.img_ids, np.int64))
        self._cat_ids = np.asarray(self.params.cat_ids, np.int64)
        self._check_cat_ids()
        self._img_index = {int(i): k for k, i in enumerate(self._img_ids)}
        self._cat_index = {int(c): k for k, c in enumerate(self._cat_ids)}
        # params.cat_ids may be in any order: searchsorted goes through the sorted ids.
        self._cat_sorter = np.argsort(self._cat_ids, kind="stable")
        num_cats = len(self._cat_ids)

        anns = []
        for img_id in self._img_ids.tolist():
            for ann in gt.img_ann_map.get(img_id, ()):
                if ann["category_id"] in self._cat_index and 0 < ann["area"] < float("inf"):
                    anns.append(ann)
        self._gt_anns = anns
        self._gt_img = np.array([self._img_index[a["image_id"]] for a in anns], np.int64)
        self._gt_cat = np.array([self._cat_index[a["category_id"]] for a in anns], np.int64)
        self._gt_area = np.array([a["area"] for a in anns], np.float64)
        self._gt_id = np.array([a["id"] for a in anns], np.int64)
        ignore = np.array([bool(a.get("ignore", 0)) for a in anns], bool)
        low, high = np.asarray(self.params.area_rng, np.float64).T
        # (A, G): ignored in area range a (LVISEval's "_ignore").
        self._gt_ignored = (ignore[None] | (self._gt_area[None] < low[:, None])
                            | (self._gt_area[None] > high[:, None]))
        self._gt_starts = np.searchsorted(self._gt_img, np.arange(len(self._img_ids) + 1))

        self._positive = np.unique(_pair_keys(self._gt_img, self._gt_cat, num_cats))
        self._negative = self._image_category_pairs("neg_category_ids")
        self._not_exhaustive = self._image_category_pairs("not_exhaustive_category_ids")

    def _check_cat_ids(self):
        if len(np.unique(self._cat_ids)) != len(self._cat_ids):
            raise ValueError("params.cat_ids lists a category id twice; give each once")
        unknown = sorted(set(self._cat_ids.tolist()) - set(self.lvis_gt.get_cat_ids()))
        if unknown:
            raise ValueError("params.cat_ids has ids {} that are not categories of the ground "
                             "truth; evaluate categories of this LVIS set".format(unknown[:10]))

    def _category_index(self, category_ids):
        """Position in params.cat_ids of each of ``category_ids`` (all evaluated)."""
        sorted_position = np.searchsorted(self._cat_ids[self._cat_sorter], category_ids)
        return self._cat_sorter[sorted_position]

    def _image_category_pairs(self, field):
        """Sorted (image, category) keys listed in each image's ``field`` (known categories)."""
        keys = []
        for img_id in self._img_ids.tolist():
            img = self.lvis_gt.imgs[img_id]
            if field not in img:
                raise KeyError("LVIS image {} has no '{}' field; federated evaluation needs it"
                               .format(img_id, field))
            img_index = self._img_index[img_id]
            keys.extend(img_index * len(self._cat_ids) + self._cat_index[c]
                        for c in img[field] if c in self._cat_index)
        return np.unique(np.asarray(keys, np.int64))

    def _gt_geometry(self, first, last):
        """IoU inputs of annotations first..last-1 (one image): (n, 4) boxes or RLEs."""
        anns = self._gt_anns[first:last]
        if self.params.iou_type == "bbox":
            return np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        img = self.lvis_gt.imgs[anns[0]["image_id"]]
        return [_rle_of_segmentation(a["segmentation"], img["height"], img["width"]) for a in anns]

    # ------------------------------------------------------------------ detections
    def _prepare_dt(self):
        """Keep the detections LVISEval evaluates; arrays sorted by (image, category)."""
        dets = self.results_list
        num = len(dets)
        try:
            image_id = np.fromiter((d["image_id"] for d in dets), np.int64, num)
            category_id = np.fromiter((d["category_id"] for d in dets), np.int64, num)
            score = np.fromiter((d["score"] for d in dets), np.float64, num)
        except KeyError as e:
            raise KeyError("every LVIS result needs image_id, category_id and score; one lacks {}"
                           .format(e)) from None

        unknown = ~np.isin(image_id, self._img_ids)
        if np.any(unknown):
            bad = int(np.flatnonzero(unknown)[0])
            raise ValueError("result {} has image_id {}, which is not an image of the ground "
                             "truth; results do not correspond to this LVIS set"
                             .format(bad, dets[bad]["image_id"]))
        img_index = np.searchsorted(self._img_ids, image_id)

        kept = self._limit_per_image(img_index, score)
        self._box_area_rule = (
            len(kept) > 0 and "bbox" in dets[self._first_listed(kept, img_index, score)])

        unknown_cat = ~np.isin(category_id[kept], self.lvis_gt.get_cat_ids())
        if np.any(unknown_cat):
            logger.warning("%d results have category ids that are not in the ground truth; "
                           "they are ignored, as LVISEval does", int(np.sum(unknown_cat)))
        kept = kept[np.isin(category_id[kept], self._cat_ids)]
        cat_index = self._category_index(category_id[kept])
        keys = _pair_keys(img_index[kept], cat_index, len(self._cat_ids))
        evaluated = np.isin(keys, self._positive) | np.isin(keys, self._negative)
        kept, cat_index, keys = kept[evaluated], cat_index[evaluated], keys[evaluated]

        area = self._dt_area([dets[i] for i in kept.tolist()])
        valid = (area > 0) & (area < np.inf)
        kept, cat_index, keys, area = kept[valid], cat_index[valid], keys[valid], area[valid]

        order = np.lexsort((kept, -score[kept], keys))
        self._dt_index = kept[order]
        self._dt_img = img_index[self._dt_index]
        self._dt_cat = cat_index[order]
        self._dt_key = keys[order]
        self._dt_score = score[self._dt_index]
        self._dt_area_value = area[order]
        self._dt_not_exhaustive = np.isin(self._dt_key, self._not_exhaustive)
        self._dt_starts = np.searchsorted(self._dt_img, np.arange(len(self._img_ids) + 1))

    def _limit_per_image(self, img_index, score):
        """Indices of the max_dets highest scores of each image (stable), ascending."""
        max_dets = self.params.max_dets
        over = np.bincount(img_index, minlength=len(self._img_ids))[img_index] > max_dets
        if max_dets < 0 or not over.any():
            return np.arange(len(score))
        crowded = np.flatnonzero(over)
        crowded = crowded[np.lexsort((-score[crowded], img_index[crowded]))]
        keep = np.ones(len(score), bool)
        keep[crowded[_rank_in_segments(img_index[crowded]) >= max_dets]] = False
        return np.flatnonzero(keep)

    @staticmethod
    def _first_listed(kept, img_index, score):
        """Index of LVISResults' first result after the cap, whose keys set the format rules.

        LVISResults lists the capped results image by image in order of first appearance; a
        capped image's results are listed by descending score (stable), the others as given.
        """
        first_image = img_index[0]
        listed = kept[img_index[kept] == first_image]
        if len(listed) == np.count_nonzero(img_index == first_image):
            return 0
        return int(listed[np.argmax(score[listed])])

    def _dt_area(self, dets):
        """Areas as LVISResults sets them: w * h if its first result has a box, else mask area."""
        if not dets:
            return np.zeros(0, np.float64)
        if self._box_area_rule:
            try:
                return np.array([d["bbox"][2] * d["bbox"][3] for d in dets], np.float64)
            except KeyError:
                raise KeyError("the first LVIS result has a 'bbox', so every result needs one") \
                    from None
        try:
            rles = [d["segmentation"] for d in dets]
        except KeyError:
            raise KeyError("the first LVIS result has no 'bbox', so every result needs a "
                           "'segmentation' (compressed RLE)") from None
        return _mask_areas(rles)

    def _dt_geometry(self, positions):
        """IoU inputs of the sorted detections at ``positions`` (one image)."""
        dets = [self.results_list[i] for i in self._dt_index[positions].tolist()]
        if self.params.iou_type == "bbox":
            boxes = [d["bbox"] if "bbox" in d else mask_utils.toBbox(d["segmentation"])
                     for d in dets]
            return np.array(boxes, np.float64).reshape(-1, 4)
        img = self.lvis_gt.imgs[dets[0]["image_id"]]
        height, width = img["height"], img["width"]
        return [_rle_of_segmentation(d["segmentation"], height, width) if "segmentation" in d
                else _rle_of_segmentation([_box_polygon(d["bbox"])], height, width)
                for d in dets]

    # ------------------------------------------------------------------ evaluation
    def _candidate_pairs(self):
        """(detection, annotation, IoU) of the same image and category with IoU >= 0.5."""
        thr = min(self.params.iou_thrs[0], 1 - 1e-10)
        has_gt = np.isin(self._dt_key, self._positive)
        det_parts, gt_parts, iou_parts = [], [], []
        for img in np.unique(self._dt_img[has_gt]).tolist():
            d0, d1 = self._dt_starts[img], self._dt_starts[img + 1]
            g0, g1 = self._gt_starts[img], self._gt_starts[img + 1]
            dets = d0 + np.flatnonzero(has_gt[d0:d1])
            ious = mask_utils.iou(self._dt_geometry(dets), self._gt_geometry(g0, g1),
                                  np.zeros(g1 - g0, np.uint8))
            same = self._dt_cat[dets][:, None] == self._gt_cat[g0:g1][None, :]
            d, g = np.nonzero(same & (ious >= thr))
            det_parts.append(dets[d])
            gt_parts.append(g0 + g)
            iou_parts.append(ious[d, g])
        if not det_parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
        return np.concatenate(det_parts), np.concatenate(gt_parts), np.concatenate(iou_parts)

    def _match(self, pair_det, pair_gt, pair_iou):
        """Greedy matching of LVISEval.evaluate_img for all images and categories at once.

        Detections are taken in score order within their (image, category); detections of
        different (image, category) pairs never compete, so the k-th candidate detection of
        every pair is matched in one vectorised step, for every IoU threshold and area range.

        Returns:
            (thr, area, det, gt) int64 arrays, one entry per match.
        """
        num_thrs, num_areas = len(self.params.iou_thrs), len(self.params.area_rng)
        found = [np.zeros((4, 0), np.int64)]
        if len(pair_det) == 0:
            return found[0]
        thrs = np.minimum(self.params.iou_thrs, 1 - 1e-10)
        # Detections are sorted by (image, category, -score, input order): the order in which
        # LVISEval visits them. Rank them among the candidates of their (image, category).
        candidates = np.unique(pair_det)
        rank = np.empty(len(self._dt_index), np.int64)
        rank[candidates] = _rank_in_segments(self._dt_key[candidates])
        order = np.lexsort((pair_gt, pair_det, rank[pair_det]))
        pair_det, pair_gt, pair_iou = pair_det[order], pair_gt[order], pair_iou[order]
        pair_rank = rank[pair_det]
        step_bounds = np.searchsorted(pair_rank, np.arange(pair_rank[-1] + 2))

        taken = np.zeros((num_thrs, num_areas, len(self._gt_id)), bool)
        for first, last in zip(step_bounds[:-1], step_bounds[1:]):
            det, gt, iou = pair_det[first:last], pair_gt[first:last], pair_iou[first:last]
            starts = _segment_starts(det)
            free = (iou >= thrs[:, None])[:, None, :] & ~taken[:, :, gt]
            ignored = self._gt_ignored[:, gt][None]
            chosen = _last_best(free & ~ignored, iou, starts)
            chosen = np.where(chosen >= 0, chosen, _last_best(free & ignored, iou, starts))
            t, a, s = np.nonzero(chosen >= 0)
            matched_gt = gt[chosen[t, a, s]]
            taken[t, a, matched_gt] = True
            found.append(np.stack([t, a, det[starts[s]], matched_gt]))
        return np.concatenate(found, axis=1)

    def _detection_flags(self, matches, order):
        """True / false positive flags of LVISEval.accumulate (an ignored detection is neither).

        Arguments:
            matches: (4, M) thr, area, detection, annotation of each match (_match).
            order: (D,) the detections in the accumulation order.

        Returns:
            two (T, A, D) bool arrays, detections in the accumulation order.
        """
        num_thrs = len(self.params.iou_thrs)
        low, high = np.asarray(self.params.area_rng, np.float64).T
        area = self._dt_area_value[None]
        # (A, D): an unmatched detection is ignored outside the area range or when its
        # category is not exhaustively annotated on its image.
        ignorable = (area < low[:, None]) | (area > high[:, None]) | self._dt_not_exhaustive[None]
        ignorable = ignorable[:, order]
        tps = np.zeros((num_thrs,) + ignorable.shape, bool)
        fps = np.repeat(~ignorable[None], num_thrs, axis=0)
        thr, area_idx, det, gt = matches
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        det = position[det]
        # dt_m holds the matched annotation's id, so a match to id 0 reads as no match.
        counted = self._gt_id[gt] != 0
        matched_ignored = self._gt_ignored[area_idx, gt]
        tps[thr, area_idx, det] = counted & ~matched_ignored
        fps[thr, area_idx, det] = ~counted & ~matched_ignored & ~ignorable[area_idx, det]
        return tps, fps

    def evaluate(self):
        """Match detections to annotations for every image, category, area range and IoU."""
        logger.info("Running per image evaluation (%s).", self.params.iou_type)
        self._prepare_gt()
        self._prepare_dt()
        # Accumulation order: by category, descending score, image, input order (LVISEval
        # concatenates images in id order, each sorted by score, then sorts stably by score).
        order = np.lexsort((self._dt_index, self._dt_img, -self._dt_score, self._dt_cat))
        self._cat_bounds = np.searchsorted(self._dt_cat[order],
                                           np.arange(len(self._cat_ids) + 1))
        self._tps, self._fps = self._detection_flags(self._match(*self._candidate_pairs()), order)
        self._freq_groups()

    def _freq_groups(self):
        groups = [[] for _ in self.params.img_count_lbl]
        for idx, cat in enumerate(self.lvis_gt.load_cats(self.params.cat_ids)):
            if "frequency" not in cat:
                raise KeyError("LVIS category {} has no 'frequency' field (r, c or f)"
                               .format(cat["id"]))
            groups[self.params.img_count_lbl.index(cat["frequency"])].append(idx)
        self.freq_groups = groups

    def _precision_recall(self, tps, fps, num_gt):
        """LVISEval.accumulate's precision and recall for one category.

        Arguments:
            tps, fps: (T, A', n) flags of its n detections in accumulation order.
            num_gt: (A',) its non-ignored annotations per area range, all > 0.

        Returns:
            precision (T, R, A') and recall (T, A').
        """
        rec_thrs = self.params.rec_thrs
        num_thrs, num_areas, num_dets = tps.shape
        tp_sum = np.cumsum(tps, axis=2).astype(np.float64)
        fp_sum = np.cumsum(fps, axis=2).astype(np.float64)
        rc = tp_sum / num_gt[None, :, None]
        pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        # precision made monotone: the maximum at any higher recall
        pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
        recall = rc[:, :, -1] if num_dets else np.zeros((num_thrs, num_areas))

        # LVISEval reads pr at searchsorted(rc, rec_thrs, "left"), and 0 past the last detection.
        rows = num_thrs * num_areas
        index = np.array([np.searchsorted(row_rc, rec_thrs, side="left")
                          for row_rc in rc.reshape(rows, num_dets)])
        reached = index < num_dets
        precision = np.zeros((rows, len(rec_thrs)))
        row = np.broadcast_to(np.arange(rows)[:, None], index.shape)
        precision[reached] = pr.reshape(rows, num_dets)[row[reached], index[reached]]
        return precision.reshape(num_thrs, num_areas, -1).transpose(0, 2, 1), recall

    def accumulate(self):
        """Precision at 101 recall points and recall, per IoU, category and area (LVISEval)."""
        if not hasattr(self, "_tps"):
            raise RuntimeError("Please run evaluate() first.")
        params = self.params
        num_thrs, num_recalls = len(params.iou_thrs), len(params.rec_thrs)
        num_cats, num_areas = len(params.cat_ids), len(params.area_rng)
        precision = -np.ones((num_thrs, num_recalls, num_cats, num_areas))
        recall = -np.ones((num_thrs, num_cats, num_areas))
        num_gt = np.stack([np.bincount(self._gt_cat[~ignored], minlength=num_cats)
                           for ignored in self._gt_ignored], axis=1)  # (K, A)
        for cat in np.flatnonzero(num_gt.any(axis=1)).tolist():
            areas = np.flatnonzero(num_gt[cat])
            dets = slice(self._cat_bounds[cat], self._cat_bounds[cat + 1])
            cat_precision, cat_recall = self._precision_recall(
                self._tps[:, areas, dets], self._fps[:, areas, dets], num_gt[cat, areas])
            precision[:, :, cat, areas] = cat_precision
            recall[:, cat, areas] = cat_recall
        self.eval = {
            "params": params,
            "counts": [num_thrs, num_recalls, num_cats, num_areas],
            "precision": precision,
            "recall": recall,
        }

    def _summarize(self, summary_type, iou_thr=None, area_rng="all", freq_group_idx=None):
        aidx = [i for i, label in enumerate(self.params.area_rng_lbl) if label == area_rng]
        if summary_type == "ap":
            s = self.eval["precision"]
            if iou_thr is not None:
                s = s[np.where(iou_thr == self.params.iou_thrs)[0]]
            if freq_group_idx is not None:
                s = s[:, :, self.freq_groups[freq_group_idx], aidx]
            else:
                s = s[:, :, :, aidx]
        else:
            s = self.eval["recall"]
            if iou_thr is not None:
                s = s[np.where(iou_thr == self.params.iou_thrs)[0]]
            s = s[:, :, aidx]
        valid = s[s > -1]
        return -1 if len(valid) == 0 else np.mean(valid)

    def summarize(self):
        """Fill ``results`` with LVISEval's summary metrics."""
        if not self.eval:
            raise RuntimeError("Please run accumulate() first.")
        res = self.results
        res["AP"] = self._summarize("ap")
        res["AP50"] = self._summarize("ap", iou_thr=0.50)
        res["AP75"] = self._summarize("ap", iou_thr=0.75)
        res["APs"] = self._summarize("ap", area_rng="small")
        res["APm"] = self._summarize("ap", area_rng="medium")
        res["APl"] = self._summarize("ap", area_rng="large")
        res["APr"] = self._summarize("ap", freq_group_idx=0)
        res["APc"] = self._summarize("ap", freq_group_idx=1)
        res["APf"] = self._summarize("ap", freq_group_idx=2)
        max_dets = self.params.max_dets
        res["AR@{}".format(max_dets)] = self._summarize("ar")
        for area_rng in ("small", "medium", "large"):
            res["AR{}@{}".format(area_rng[0], max_dets)] = self._summarize("ar", area_rng=area_rng)

    def run(self):
        self.evaluate()
        self.accumulate()
        self.summarize()
        return self.results

    def summary_lines(self):
        """LVISEval.print_results's lines, one per metric."""
        template = (" {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} catIds={:>3s}] "
                    "= {:0.3f}")
        thrs = self.params.iou_thrs
        lines = []
        for key, value in self.results.items():
            title, kind = ("Average Precision", "(AP)") if "AP" in key else \
                ("Average Recall", "(AR)")
            if len(key) > 2 and key[2].isdigit():
                iou = "{:0.2f}".format(float(key[2:]) / 100)
            else:
                iou = "{:0.2f}:{:0.2f}".format(thrs[0], thrs[-1])
            group = key[2] if len(key) > 2 and key[2] in "rcf" else "all"
            area = key[2] if len(key) > 2 and key[2] in "sml" else "all"
            lines.append(template.format(title, kind, iou, area, self.params.max_dets, group,
                                         value))
        return lines
