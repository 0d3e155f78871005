"""Write the embedded long-tailed benchmark (LVIS format) deterministically from a seed.

    python tools/make_synthetic_lvis.py [--output datasets/synthetic_lt] [--seed 0]
        [--num-categories 64] [--max-instances 1500] [--force]

Writes OUTPUT/train.json, OUTPUT/val.json and OUTPUT/images/{train,val}/*.jpg, the layout of
DatasetCatalog's synthetic_lt_train / synthetic_lt_val entries (DATA_DIR/synthetic_lt/...).
See maskrcnn_benchmark/data/datasets/synthetic_lt.py for what the dataset contains.
"""
import argparse
import logging
import os
import shutil
import sys
import time

from maskrcnn_benchmark.data.datasets.synthetic_lt import (
    SPLITS,
    category_statistics,
    plan_dataset,
    write_dataset,
)

# The LST paper's training instance-count bins, as (label, low, high) with low <= n < high.
COUNT_BINS = (("1", 1, 2), ("2-4", 2, 5), ("5-9", 5, 10), ("10-99", 10, 100),
              ("100-999", 100, 1000), (">=1000", 1000, float("inf")))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="datasets/synthetic_lt", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--num-categories", type=int, default=64,
                        help="number of categories (colour x texture x shape combinations)")
    parser.add_argument("--max-instances", type=int, default=1500,
                        help="training instances of the most frequent category (the rarest has 1)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing dataset in --output")
    return parser.parse_args(argv)


def count_table(plan):
    """Lines of a table: categories and training instances per instance-count bin."""
    _, instance_count = category_statistics(plan.splits["train"])
    lines = ["{:>8} {:>10} {:>10}".format("bin", "categories", "instances")]
    for label, low, high in COUNT_BINS:
        counts = [n for n in instance_count.values() if low <= n < high]
        lines.append("{:>8} {:>10} {:>10}".format(label, len(counts), sum(counts)))
    return lines


def main(argv=None):
    args = parse_args(argv)
    existing = [os.path.join(args.output, "{}.json".format(s)) for s in SPLITS]
    if any(os.path.exists(p) for p in existing):
        if not args.force:
            sys.exit(
                "{} already holds a dataset ({}); pass --force to replace it or choose another "
                "--output.".format(args.output, ", ".join(p for p in existing if os.path.exists(p)))
            )
        for split in SPLITS:
            shutil.rmtree(os.path.join(args.output, "images", split), ignore_errors=True)
    start = time.time()
    try:
        plan = plan_dataset(
            seed=args.seed, num_categories=args.num_categories, max_instances=args.max_instances
        )
    except ValueError as error:
        sys.exit("make_synthetic_lvis.py: {}".format(error))
    write_dataset(plan, args.output)
    logger = logging.getLogger("make_synthetic_lvis")
    logger.info(
        "Synthetic LVIS (seed %d): %d categories, %s in %.1f s; training instances per bin:\n%s",
        args.seed, len(plan.categories),
        ", ".join("{} {} images".format(len(plan.splits[s]), s) for s in SPLITS),
        time.time() - start, "\n".join(count_table(plan)),
    )


if __name__ == "__main__":
    # force: importing lvis-api (via the package) already gives the root logger a handler.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", force=True
    )
    main()
