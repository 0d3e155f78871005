"""Evaluate an LVIS results file with the LVIS protocol (numbers identical to lvis-api's LVISEval).

    python tools/eval_lvis.py --gt VAL.json --dt RESULTS.json --iou-type segm|bbox \
        [--train TRAIN.json] [--groups GROUPS.json] [--fixed-ap [--dets-per-cat 10000]] \
        [--out metrics.json]

RESULTS.json is a list of {image_id, category_id, score, bbox [x, y, w, h] | segmentation
(compressed RLE)}. Prints LVISEval's summary (AP, AP50, AP75, APs/m/l, APr/c/f, AR), then,
with --train, the AP per training instance-count bin of the LST paper ((0,1], (0,5), (0,10),
[10,100), [100,1000), [1000,-)). --out writes metrics.json (atomically): LVISEval's keys on its
0..1 scale (-1 when undefined), "bins" (with --train), "groups" (with --groups: a json object
{name: [category ids]}) and "per_category_AP" {category id: AP}.

--fixed-ap adds Fixed AP (Dave et al. 2021): the --dets-per-cat best results of each category
over the file (10,000 on LVIS), no per-image cap; printed after the standard summary, and in
metrics.json as "fixed_AP" (the same keys, bins and groups, AR as "AR@-1"). The results should
come from an inference without a per-image cap (MODEL.ROI_HEADS.DETECTIONS_PER_IMG 0), e.g. the
<iou type>_fixed_ap.json that TEST.LVIS_FIXED_AP writes.
"""
import argparse
import json
import logging
import sys

from maskrcnn_benchmark.utils.miscellaneous import atomic_write_json
from maskrcnn_benchmark.data.datasets.evaluation.lvis.bins import training_instance_counts
from maskrcnn_benchmark.data.datasets.evaluation.lvis.fast_eval import FastLVISEval
from maskrcnn_benchmark.data.datasets.evaluation.lvis.fixed_ap import (
    FIXED_AP_DETS_PER_CLASS,
    fixed_ap_evaluator,
)
from maskrcnn_benchmark.data.datasets.evaluation.lvis.lvis_eval import lvis_metrics
from maskrcnn_benchmark.data.datasets.evaluation.lvis.results_file import (
    EvaluationInputError,
    load_ground_truth,
    load_results,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="LVIS-format validation json")
    parser.add_argument("--dt", required=True, help="results json (list of records)")
    parser.add_argument("--iou-type", required=True, choices=["segm", "bbox"])
    parser.add_argument("--train", help="LVIS-format training json, for the instance-count bins")
    parser.add_argument("--groups", help="json object {group name: [category ids]}")
    parser.add_argument("--max-dets", type=int, default=300,
                        help="detections per image across categories (LVIS: 300)")
    parser.add_argument("--fixed-ap", action="store_true",
                        help="also report Fixed AP (Dave et al. 2021; no per-image cap)")
    parser.add_argument("--dets-per-cat", type=int, default=FIXED_AP_DETS_PER_CLASS,
                        help="Fixed AP: results kept per category over the dataset (10000)")
    parser.add_argument("--out", help="metrics.json to write")
    args = parser.parse_args(argv)
    if args.dets_per_cat <= 0:
        parser.error("--dets-per-cat must be positive, got {}".format(args.dets_per_cat))
    return args


def _print_sections(metrics):
    for section in ("bins", "groups"):
        if section in metrics:
            print("AP per {}:".format("training instance-count bin" if section == "bins"
                                      else "category group"))
            for name, value in metrics[section].items():
                print(" {:<12} {:0.3f}".format(name, value))


def _load_train_counts(path):
    try:
        with open(path) as f:
            train = json.load(f)
    except FileNotFoundError:
        raise EvaluationInputError("training file {}: not found".format(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvaluationInputError("training file {}: not valid JSON ({})".format(path, e)) \
            from None
    if not isinstance(train, dict) or "categories" not in train:
        raise EvaluationInputError("training file {}: no 'categories' list; is it an LVIS "
                                   "annotation file?".format(path))
    if not all("instance_count" in c for c in train["categories"]) and "annotations" not in train:
        raise EvaluationInputError("training file {}: categories lack 'instance_count' and there "
                                   "are no 'annotations' to count".format(path))
    try:
        return training_instance_counts(train, path)
    except ValueError as e:
        raise EvaluationInputError(str(e)) from None


def _load_groups(path, lvis_gt):
    try:
        with open(path) as f:
            groups = json.load(f)
    except FileNotFoundError:
        raise EvaluationInputError("groups file {}: not found".format(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvaluationInputError("groups file {}: not valid JSON ({})".format(path, e)) from None
    if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        raise EvaluationInputError("groups file {}: expected {{name: [category ids]}}".format(path))
    for name, ids in groups.items():
        unknown = [c for c in ids if c not in lvis_gt.cats]
        if unknown:
            raise EvaluationInputError("groups file {}, group {!r}: category ids {} are not in the "
                                       "ground truth".format(path, name, unknown[:10]))
    return groups


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        lvis_gt = load_ground_truth(args.gt)
        results = load_results(args.dt, lvis_gt, args.iou_type)
        instance_counts = _load_train_counts(args.train) if args.train else None
        groups = _load_groups(args.groups, lvis_gt) if args.groups else None
    except EvaluationInputError as e:
        sys.exit("eval_lvis.py: error: {}".format(e))

    evaluator = FastLVISEval(lvis_gt, results, args.iou_type, max_dets=args.max_dets)
    evaluator.run()
    print("\n".join(evaluator.summary_lines()))
    metrics = lvis_metrics(evaluator, instance_counts, groups)
    _print_sections(metrics)
    if args.fixed_ap:
        fixed = fixed_ap_evaluator(lvis_gt, results, args.iou_type, args.dets_per_cat)
        print("Fixed AP ({} results per category, no per-image cap):".format(args.dets_per_cat))
        print("\n".join(fixed.summary_lines()))
        metrics["fixed_AP"] = lvis_metrics(fixed, instance_counts, groups)
        _print_sections(metrics["fixed_AP"])
    if args.out:
        atomic_write_json(metrics, args.out)


if __name__ == "__main__":
    main()
