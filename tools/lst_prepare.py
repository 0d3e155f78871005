"""Divide the categories into LST phases and plan each phase's balanced replay (paper §3.1, §3.3).

    python tools/lst_prepare.py --train-json TRAIN.json --base b --phase-size s \
        --output-dir DIR [--quota-rule ceil|round]

Writes DIR/phases.json (sorted_category_ids, groups, base, phase_size) and, for every phase
t >= 1, DIR/phase_<t>/replay_plan.json (n_c, per old class n_k and quota). Running it again
with the same inputs rewrites identical files; it refuses to replace a file whose content
would change (choose another DIR, or delete the old files to start over).
"""
import argparse
import sys

from maskrcnn_benchmark.lst.division import QUOTA_RULES
from maskrcnn_benchmark.lst.experiment import Experiment


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-json", required=True, help="LVIS-format training json")
    parser.add_argument("--base", type=int, required=True,
                        help="b: categories of the base group C_0 (paper: 270)")
    parser.add_argument("--phase-size", type=int, required=True,
                        help="categories per incremental phase (paper: 160)")
    parser.add_argument("--output-dir", required=True, help="the experiment's OUTPUT_DIR")
    parser.add_argument("--quota-rule", choices=QUOTA_RULES, default="ceil",
                        help="replay quota: ceil(n_c / n_k) (paper) or max(1, round(n_c / n_k)) "
                             "(authors' code)")
    return parser.parse_args(argv)


def summary_lines(phases, plans, instance_counts):
    """One line per group: size and instance-count range; replay images per epoch."""
    lines = []
    for t, group in enumerate(phases["groups"]):
        counts = [instance_counts[c] for c in group]
        line = "phase {}: {} categories, {}..{} training instances".format(
            t, len(group), min(counts), max(counts))
        if t in plans:
            line += ", n_c {:.2f}, {} replayed images per epoch".format(
                plans[t]["n_c"], sum(v["quota"] for v in plans[t]["old_classes"].values()))
        lines.append(line)
    return lines


def main(argv=None):
    args = parse_args(argv)
    try:
        phases, plans, instance_counts = Experiment(args.output_dir).prepare(
            args.train_json, args.base, args.phase_size, args.quota_rule)
    except ValueError as error:
        sys.exit("lst_prepare.py: error: {}".format(error))
    print("\n".join(summary_lines(phases, plans, instance_counts)))
    print("Wrote {}/phases.json and {} replay plans".format(args.output_dir, len(plans)))


if __name__ == "__main__":
    main()
