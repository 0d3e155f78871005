"""AP of category subsets: per category, per training instance-count bin (LST paper), per group.

All functions read an evaluator after accumulate(): FastLVISEval or lvis.LVISEval, whose
``eval["precision"]`` is (T IoUs, R recalls, K categories, A areas) with -1 where a category has
no ground truth, and ``params.cat_ids`` the K category ids. As lvis-api computes APr/c/f, the AP
of a set of categories is the mean of all its precision entries > -1 at area "all" (300
detections per image), or -1 when there is none.
"""
import json
import logging
from collections import OrderedDict

import numpy as np

from maskrcnn_benchmark.data.datasets.annotation_checks import training_statistics

# The paper's bins of training instance counts: label -> (lowest, highest) count, inclusive.
# The first three are nested.
INSTANCE_COUNT_BINS = OrderedDict([
    ("(0,1]", (1, 1)),
    ("(0,5)", (1, 4)),
    ("(0,10)", (1, 9)),
    ("[10,100)", (10, 99)),
    ("[100,1000)", (100, 999)),
    ("[1000,-)", (1000, float("inf"))),
])

_AREA_ALL = 0  # index of area range "all" in lvis.eval.Params.area_rng

logger = logging.getLogger(__name__)


def training_instance_counts(train_annotations, source=None):
    """Instances per category of a training set, as training uses them.

    Arguments:
        train_annotations (dict or str): an LVIS-format training json (or its path).
        source (str, optional): the file, for messages (default: the path).

    Returns:
        dict: category id -> number of training instances (0 for a category without any),
        counted by annotation_checks.training_statistics, the pass the LST division and the
        replay quotas use too; stale "instance_count" fields get a warning and are not used.
        Only a file without an "annotations" list (categories alone, e.g. with the training
        counts LVIS writes into its validation categories) is read from those fields, with a
        warning that they are not checked.
    """
    if source is None:
        source = train_annotations if isinstance(train_annotations, str) else "training annotations"
    if isinstance(train_annotations, str):
        with open(train_annotations) as f:
            train_annotations = json.load(f)
    if "annotations" not in train_annotations:
        categories = train_annotations["categories"]
        if not all("instance_count" in c for c in categories):
            raise ValueError("{} has neither 'annotations' to count nor an 'instance_count' in "
                             "every category; pass the training json".format(source))
        logger.warning("%s has no 'annotations': the bins use its categories' instance_count "
                       "fields, which cannot be checked against what training used", source)
        return {c["id"]: int(c["instance_count"]) for c in categories}
    return dict(training_statistics(train_annotations, source)[0])


def _category_positions(evaluator, category_ids):
    position = {c: k for k, c in enumerate(evaluator.params.cat_ids)}
    unknown = [c for c in category_ids if c not in position]
    if unknown:
        raise ValueError("category ids {} are not categories of the evaluated ground truth"
                         .format(sorted(unknown)[:10]))
    return [position[c] for c in category_ids]


def _mean_valid(precision):
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def ap_of_categories(evaluator, category_ids):
    """AP (0..1, -1 if undefined) of the categories ``category_ids`` together."""
    positions = _category_positions(evaluator, list(category_ids))
    return _mean_valid(evaluator.eval["precision"][:, :, positions, _AREA_ALL])


def per_category_ap(evaluator):
    """OrderedDict category id -> AP (-1 for a category without ground truth)."""
    precision = evaluator.eval["precision"]
    return OrderedDict((cat_id, _mean_valid(precision[:, :, k, _AREA_ALL]))
                       for k, cat_id in enumerate(evaluator.params.cat_ids))


def instance_count_bin_ap(evaluator, instance_counts):
    """AP of each of the paper's training instance-count bins.

    Arguments:
        instance_counts (dict): category id -> training instances (training_instance_counts).
            Evaluated categories missing from it, or with 0 instances, fall in no bin.

    Returns:
        OrderedDict: bin label -> AP (-1 when no category of the bin has ground truth).
    """
    result = OrderedDict()
    for label, (low, high) in INSTANCE_COUNT_BINS.items():
        members = [c for c in evaluator.params.cat_ids
                   if low <= instance_counts.get(c, 0) <= high]
        result[label] = ap_of_categories(evaluator, members)
    return result


def group_ap(evaluator, groups):
    """AP of each group of category ids, e.g. an LST phase's old, new and all classes.

    Arguments:
        groups (list[list[int]] or dict[str, list[int]]): category ids per group.

    Returns:
        list[float] or OrderedDict name -> float, matching ``groups``.
    """
    if isinstance(groups, dict):
        return OrderedDict((name, ap_of_categories(evaluator, ids)) for name, ids in groups.items())
    return [ap_of_categories(evaluator, ids) for ids in groups]
