"""LST's class-incremental phases (paper §3.1, §3.3): the division of the categories into a base
group and incremental groups (phases.json), and the balanced-replay plan of each phase
(replay_plan.json); lst.experiment names and writes the files, docs/lst.md describes them.

Division: categories are sorted by training instance count (annotations per category that
training uses, after the checks of data/datasets/annotation_checks.py), descending, ties by ascending id; the first ``base`` form groups[0] (C_0), the
rest are cut into groups of ``phase_size`` (the last may be smaller). The training label of a
category is 1 + its position in that order, so the labels of phase t are 1..len(seen classes)
and the old classes' rows are a prefix of the new ones.

Replay plan of phase t >= 1: with n_c the mean training instance count of the new classes
groups[t] and, for each old class k, n_k = instances of k / images containing k, old class k
replays quota_k = ceil(n_c / n_k) images per epoch (paper), or max(1, round(n_c / n_k))
(authors' notebook, NumPy rounding).
"""
import json
import math
import os
from fractions import Fraction

import numpy as np

from maskrcnn_benchmark.data.datasets.annotation_checks import training_statistics

QUOTA_RULES = ("ceil", "round")


def _read_json(path, missing, fix):
    """The parsed JSON file at ``path``; ValueError "<missing>; <fix>" when there is no such file,
    and one naming the file and the fix when it is not JSON."""
    if not path or not os.path.isfile(path):
        raise ValueError("{}; {}".format(missing, fix))
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError("{} is not valid JSON ({}); {}".format(path, error, fix)) from error


# ----------------------------------------------------------------------------- statistics
def load_train_annotations(path):
    """The parsed LVIS-format training json at ``path``, checked to have categories and
    annotations; ValueError naming the file otherwise."""
    data = _read_json(path, "Training annotation file {} not found".format(path),
                      "pass the LVIS-format training json (e.g. datasets/lvis/lvis_v0.5_train.json).")
    for key in ("categories", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise ValueError(
                "{} has no '{}' list; pass an LVIS/COCO-format training json.".format(path, key)
            )
    if not data["categories"]:
        raise ValueError("{} lists no categories; there is nothing to divide.".format(path))
    return data


def category_statistics(data, source="training annotations"):
    """(instance_counts, image_counts): dicts category id -> number of annotations training uses
    of it, and -> number of distinct images with at least one of them (0 for a category without
    any), from the one validation pass of annotation_checks.training_statistics (a category's
    "instance_count" field is only compared, with a warning)."""
    return training_statistics(data, source)


# ----------------------------------------------------------------------------- division
def sort_by_instance_count(instance_counts):
    """Category ids sorted by instance count, descending, ties by ascending id."""
    return sorted(instance_counts, key=lambda c: (-instance_counts[c], c))


def divide_categories(instance_counts, base, phase_size):
    """The phases dict {"sorted_category_ids", "groups", "base", "phase_size"}.

    Arguments:
        instance_counts (dict): category id -> training instances (category_statistics).
        base (int): b, size of groups[0]; 0 < b < number of categories.
        phase_size (int): categories per incremental group; > 0.
    """
    num_categories = len(instance_counts)
    if not isinstance(base, int) or not 0 < base < num_categories:
        raise ValueError(
            "base size {} must be an integer in [1, {}) (the number of categories is {}); pass "
            "--base / MODEL.LST.BASE_SIZE smaller than the number of categories.".format(
                base, num_categories, num_categories
            )
        )
    if not isinstance(phase_size, int) or phase_size <= 0:
        raise ValueError(
            "phase size {} must be a positive integer; set --phase-size / "
            "MODEL.LST.PHASE_SIZE.".format(phase_size)
        )
    order = sort_by_instance_count(instance_counts)
    groups = [order[:base]] + [
        order[start:start + phase_size] for start in range(base, num_categories, phase_size)
    ]
    return {"sorted_category_ids": order, "groups": groups, "base": base, "phase_size": phase_size}


def check_phases(phases, source):
    """ValueError naming ``source`` unless ``phases`` is a consistent phases dict."""
    def invalid(problem):
        return ValueError(
            "{} is not a valid phases file: {}; regenerate it with tools/lst_prepare.py.".format(
                source, problem
            )
        )

    if not isinstance(phases, dict):
        raise invalid("expected a JSON object")
    for key in ("sorted_category_ids", "groups", "base", "phase_size"):
        if key not in phases:
            raise invalid("missing key '{}'".format(key))
    groups = phases["groups"]
    if not isinstance(groups, list) or not groups or not all(
        isinstance(g, list) and g for g in groups
    ):
        raise invalid("'groups' must be a list of non-empty lists of category ids")
    flattened = [c for g in groups for c in g]
    if flattened != phases["sorted_category_ids"]:
        raise invalid("the groups, concatenated, differ from 'sorted_category_ids'")
    if len(set(flattened)) != len(flattened):
        raise invalid("a category id appears twice")
    if len(groups[0]) != phases["base"]:
        raise invalid("groups[0] has {} ids but base is {}".format(len(groups[0]), phases["base"]))
    if any(len(g) > phases["phase_size"] for g in groups[1:]):
        raise invalid("an incremental group is larger than phase_size {}".format(
            phases["phase_size"]))


def load_phases(path):
    """The phases dict of a phases.json, validated; ValueError naming the file and the fix."""
    phases = _read_json(path, "Phases file {!r} not found".format(path),
                        "write it with tools/lst_prepare.py and set MODEL.LST.PHASES_FILE to it.")
    check_phases(phases, path)
    return phases


def _check_phase(phases, phase):
    if not isinstance(phase, int) or not 0 <= phase < len(phases["groups"]):
        raise ValueError(
            "phase {} does not exist: the phases file has phases 0..{}; set "
            "MODEL.LST.PHASE accordingly.".format(phase, len(phases["groups"]) - 1)
        )


# ----------------------------------------------------------------------------- replay plan
def replay_quota(n_c, n_k, rule="ceil"):
    """Images replayed per epoch for an old class: ceil(n_c / n_k) ("ceil", paper §3.3) or
    max(1, round(n_c / n_k)) ("round", authors; NumPy's round half to even).

    ``n_c`` and ``n_k`` may be Fractions (exact ceil) or floats.
    """
    if rule not in QUOTA_RULES:
        raise ValueError("quota rule {!r} unknown; use one of {} (MODEL.LST.REPLAY_QUOTA_RULE)."
                         .format(rule, QUOTA_RULES))
    if rule == "ceil":
        return int(math.ceil(Fraction(n_c) / Fraction(n_k)))
    return max(1, int(np.round(float(n_c) / float(n_k))))


def make_replay_plan(phases, phase, instance_counts, image_counts, quota_rule="ceil"):
    """The replay_plan dict of ``phase`` >= 1.

    Arguments:
        instance_counts, image_counts (dict): category id -> training instances / images
            containing it (category_statistics).

    Returns {"phase", "quota_rule", "new_category_ids", "n_c", "old_classes": {str(category
    id): {"n_k", "quota"}}}. An old class without training images gets n_k 0 and quota 0
    (nothing can be replayed).
    """
    _check_phase(phases, phase)
    if phase == 0:
        raise ValueError("phase 0 (the base classes) has no old classes to replay.")
    if quota_rule not in QUOTA_RULES:
        raise ValueError("quota rule {!r} unknown; use one of {} (MODEL.LST.REPLAY_QUOTA_RULE)."
                         .format(quota_rule, QUOTA_RULES))
    new_ids = list(phases["groups"][phase])
    n_c = Fraction(sum(instance_counts[c] for c in new_ids), len(new_ids))
    old_classes = {}
    for category_id in (c for group in phases["groups"][:phase] for c in group):
        if image_counts[category_id] == 0:
            old_classes[str(category_id)] = {"n_k": 0.0, "quota": 0}
            continue
        n_k = Fraction(instance_counts[category_id], image_counts[category_id])
        if quota_rule == "round":
            # The authors' floating-point computation, rounded as np.round does.
            quota = replay_quota(float(n_c), float(n_k), quota_rule)
        else:
            quota = replay_quota(n_c, n_k, quota_rule)
        old_classes[str(category_id)] = {"n_k": float(n_k), "quota": quota}
    return {
        "phase": phase,
        "quota_rule": quota_rule,
        "new_category_ids": new_ids,
        "n_c": float(n_c),
        "old_classes": old_classes,
    }


def load_replay_plan(path):
    """The replay_plan dict of a replay_plan.json, checked; ValueError naming the file."""
    plan = _read_json(path, "Replay plan {!r} not found".format(path),
                      "write it with tools/lst_prepare.py and set MODEL.LST.REPLAY_PLAN_FILE to "
                      "OUTPUT_DIR/phase_<t>/replay_plan.json.")
    old_classes = plan.get("old_classes") if isinstance(plan, dict) else None
    if not isinstance(old_classes, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("quota"), int) and v["quota"] >= 0
        for v in old_classes.values()
    ):
        raise ValueError(
            "{} is not a valid replay plan: expected {{\"n_c\": float, \"old_classes\": "
            "{{\"<category id>\": {{\"n_k\": float, \"quota\": int >= 0}}}}}}; regenerate it with "
            "tools/lst_prepare.py.".format(path)
        )
    return plan


def replay_quotas_by_label(plan, category_id_to_label, num_old_classes, source="replay plan"):
    """{training label: quota} of the plan's old classes, through a dataset's
    ``json_category_id_to_contiguous_id``.

    The plan's old classes must be exactly the labels 1..num_old_classes, else ValueError
    naming ``source`` (the plan belongs to another phase or division).
    """
    quotas = {}
    for category_id, entry in plan["old_classes"].items():
        label = category_id_to_label.get(int(category_id))
        if label is None or label > num_old_classes:
            raise ValueError(
                "{}: old class {} is not among the {} old classes of the training dataset "
                "(MODEL.LST.NUM_OLD_CLASSES); the plan is for another phase or division: set "
                "MODEL.LST.REPLAY_PLAN_FILE to this phase's replay_plan.json.".format(
                    source, category_id, num_old_classes
                )
            )
        quotas[label] = entry["quota"]
    missing = sorted(set(range(1, num_old_classes + 1)) - set(quotas))
    if missing:
        raise ValueError(
            "{}: has no quota for old labels {} (of 1..{}); the plan is for another phase or "
            "division: set MODEL.LST.REPLAY_PLAN_FILE to this phase's replay_plan.json.".format(
                source, missing[:10], num_old_classes
            )
        )
    return quotas
