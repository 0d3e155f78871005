"""Load an LVIS ground-truth json and a results json, with errors that name the file and record."""
import json
import logging
import math
import numbers

from maskrcnn_benchmark.data.datasets.annotation_checks import (
    EVALUATION,
    AnnotationError,
    check_annotations,
)
from maskrcnn_benchmark.data.datasets.lvis import LVISFromDict

logger = logging.getLogger(__name__)


class EvaluationInputError(ValueError):
    """A ground-truth or results file that cannot be evaluated; the message says why."""


def _load_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvaluationInputError("{} file {}: not found".format(what, path)) from None
    except IsADirectoryError:
        raise EvaluationInputError("{} file {}: is a directory, not a json file"
                                   .format(what, path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvaluationInputError("{} file {}: not valid JSON ({})".format(what, path, e)) \
            from None


def load_ground_truth(path):
    """lvis.LVIS of an LVIS-format json that has what federated evaluation needs."""
    data = _load_json(path, "ground-truth")
    if not isinstance(data, dict):
        raise EvaluationInputError("ground-truth file {}: expected a json object with images, "
                                   "annotations and categories, got a {}"
                                   .format(path, type(data).__name__))
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise EvaluationInputError("ground-truth file {}: no '{}' list; is it an LVIS "
                                       "annotation file?".format(path, key))
    for index, image in enumerate(data["images"]):
        for key in ("id", "height", "width", "neg_category_ids", "not_exhaustive_category_ids"):
            if key not in image:
                raise EvaluationInputError(
                    "ground-truth file {}, image record {}: no '{}' field; LVIS evaluation needs "
                    "id, height, width, neg_category_ids and not_exhaustive_category_ids"
                    .format(path, index, key))
    for index, annotation in enumerate(data["annotations"]):
        for key in ("id", "image_id", "category_id", "area", "bbox", "segmentation"):
            if key not in annotation:
                raise EvaluationInputError(
                    "ground-truth file {}, annotation record {}: no '{}' field".format(
                        path, index, key))
    for index, category in enumerate(data["categories"]):
        if "id" not in category or category.get("frequency") not in ("r", "c", "f"):
            raise EvaluationInputError(
                "ground-truth file {}, category record {}: needs an 'id' and a 'frequency' of "
                "'r', 'c' or 'f'".format(path, index))
    try:
        checked = check_annotations(data, "ground-truth file " + path, EVALUATION,
                                    honour_iscrowd=False, polygons_only=False)
    except AnnotationError as error:
        raise EvaluationInputError(str(error)) from None
    for phrase in checked.report():
        logger.warning("ground-truth file %s: %s", path, phrase)
    return LVISFromDict(data)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_record(record, lvis_gt):
    """Why ``record`` cannot be evaluated against ``lvis_gt``, or None."""
    if not isinstance(record, dict):
        return "expected an object, got a {}".format(type(record).__name__)
    for key in ("image_id", "category_id", "score"):
        if key not in record:
            return "no '{}' field".format(key)
    if not _is_int(record["image_id"]) or record["image_id"] not in lvis_gt.imgs:
        return "image_id {!r} is not an image id of the ground truth".format(record["image_id"])
    if not _is_int(record["category_id"]):
        return "category_id {!r} is a {}; write category ids as JSON integers".format(
            record["category_id"], type(record["category_id"]).__name__)
    if record["category_id"] not in lvis_gt.cats:
        return "category_id {!r} is not a category id of the ground truth".format(
            record["category_id"])
    if not _is_number(record["score"]):
        return "score {!r} is not a finite number".format(record["score"])
    if "bbox" not in record and "segmentation" not in record:
        return "neither 'bbox' nor 'segmentation'"
    if "bbox" in record:
        box = record["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            return "bbox {!r} is not [x, y, width, height]".format(box)
    if "segmentation" in record:
        segm = record["segmentation"]
        if not (isinstance(segm, dict) and isinstance(segm.get("counts"), str)
                and isinstance(segm.get("size"), list) and len(segm["size"]) == 2):
            return "segmentation is not a compressed RLE {'size': [height, width], 'counts': str}"
        image = lvis_gt.imgs[record["image_id"]]
        if segm["size"] != [image["height"], image["width"]]:
            return "segmentation size {} differs from image {}'s [height, width] {}".format(
                segm["size"], record["image_id"], [image["height"], image["width"]])
    return None


# The result field each evaluation type scores.
RESULT_FIELD = {"bbox": "bbox", "segm": "segmentation"}


def load_results(path, lvis_gt, iou_type=None):
    """The list of result records of ``path``, checked against the ground truth ``lvis_gt``.

    Every record needs image_id and category_id of the ground truth, a finite score, and a bbox
    [x, y, w, h] and/or a segmentation (compressed RLE of the image's size); all records carry
    the same of these two fields (lvis-api reads the format off the first record), and with
    ``iou_type`` the one it scores ("bbox": bbox, "segm": segmentation). An empty list is
    evaluated (every AP is 0) with a warning.
    """
    records = _load_json(path, "results")
    if not isinstance(records, list):
        raise EvaluationInputError("results file {}: expected a json list of result records, got "
                                   "a {}".format(path, type(records).__name__))
    for index, record in enumerate(records):
        problem = _check_record(record, lvis_gt)
        if problem is None and (("bbox" in record) != ("bbox" in records[0])
                                or ("segmentation" in record) != ("segmentation" in records[0])):
            problem = "its fields differ from record 0's; every record needs the same of 'bbox' " \
                      "and 'segmentation'"
        if problem is not None:
            raise EvaluationInputError("results file {}, record {}: {}".format(
                path, index, problem))
    if not records:
        logger.warning("results file %s holds no detection: every AP will be 0", path)
    elif iou_type is not None and RESULT_FIELD[iou_type] not in records[0]:
        raise EvaluationInputError(
            "results file {}: --iou-type {} scores '{}', but its records have only {}; evaluate "
            "it with --iou-type {}, or write {} results".format(
                path, iou_type, RESULT_FIELD[iou_type],
                " and ".join(k for k in ("bbox", "segmentation") if k in records[0]),
                "bbox" if iou_type == "segm" else "segm",
                "mask (segmentation)" if iou_type == "segm" else "box"))
    return records
