"""Print how many instances of each class the RoI heads train on per epoch of an LST phase's
balanced replay, under both MODEL.LST.NEW_IMAGE_LABELS modes (no image is loaded, nothing is
trained or written).

    python tools/lst_replay_balance.py --config-dir configs/synthetic/lst --experiment-dir OUT \
        [--phase t ...] [--json] [KEY VALUE ...]

OUT holds phases.json and the replay plans (tools/lst_prepare.py). The phase's config is built as
tools/lst_phase_config.py builds it, and its sampler as training builds it, which also writes the
same numbers to OUT/phase_<t>/replay_balance.json when the phase trains. Without --phase: every
phase t >= 1. --json prints the whole balance of each phase (per class) instead of the summary.
"""
import argparse
import json
import sys

from maskrcnn_benchmark.data.build import TRAIN_SAMPLERS, build_dataset
from maskrcnn_benchmark.data.catalog import load_dataset_catalog
from maskrcnn_benchmark.lst.experiment import Experiment
from maskrcnn_benchmark.lst.phase import ResolvedPhase
from maskrcnn_benchmark.lst.phase_config import phase_config
from maskrcnn_benchmark.lst.replay_balance import replay_balance, summary_lines


def phase_balance(config_dir, experiment_dir, phase, opts):
    """The replay balance dict of phase ``phase`` (lst.replay_balance.replay_balance)."""
    config = phase_config(config_dir, experiment_dir, phase, opts).clone()
    config.defrost()
    config.OUTPUT_DIR = ""  # the sampler's builder writes replay_balance.json only when training
    if config.DATALOADER.SAMPLER != "BalancedReplaySampler":
        raise ValueError("phase {} of {} does not use DATALOADER.SAMPLER 'BalancedReplaySampler' (it sets "
                         "{!r}); there is no replay to measure".format(phase, config_dir, config.DATALOADER.SAMPLER))
    resolved = ResolvedPhase.from_config(config)
    (dataset,) = build_dataset(config.DATASETS.TRAIN, None, load_dataset_catalog(config), True,
                               category_ids=resolved.seen)
    sampler = TRAIN_SAMPLERS["BalancedReplaySampler"](config, dataset, 1, 0, phase=resolved)
    return replay_balance(sampler, dataset, config.MODEL.LST.ROI_ACTIVE_CLASS_ONLY)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-dir", required=True, help="folder with phase0.yaml and incremental.yaml")
    parser.add_argument("--experiment-dir", required=True, help="folder with phases.json and the replay plans")
    parser.add_argument("--phase", type=int, action="append", help="phase index t >= 1 (repeatable; default: all)")
    parser.add_argument("--json", action="store_true", help="print the per-class balance as JSON")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    try:
        phases = args.phase or list(range(1, Experiment(args.experiment_dir).num_phases()))
        for phase in phases:
            if phase < 1:
                raise ValueError("phase {} has no replay; pass --phase t with t >= 1".format(phase))
            balance = phase_balance(args.config_dir, args.experiment_dir, phase, args.opts)
            if args.json:
                print(json.dumps({"phase": phase, **balance}))
            else:
                print("phase {}: {}".format(phase, "\n".join(summary_lines(balance))))
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit("lst_replay_balance.py: error: {}".format(error.args[0] if error.args else error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
