"""Write the config of one LST phase: ``OUT/phase_<t>/config.yml``.

    python tools/lst_phase_config.py --config-dir configs/synthetic/lst --experiment-dir OUT \
        --phase t [KEY VALUE ...]

The config is the folder's phase0.yaml (t = 0) or incremental.yaml (t >= 1), the overrides, and
the keys derived from OUT/phases.json and the previous phase (maskrcnn_benchmark/lst/phase_config.py).
Train it with ``tools/train_net.py --config-file OUT/phase_<t>/config.yml``.

``--describe`` prints, instead, what lst_scripts/run_phases.sh needs: ``BASE_SIZE PHASE_SIZE
REPLAY_QUOTA_RULE SEED TRAIN_ANNOTATION_FILE``, the division, the experiment's SEED (phase t uses
SEED + t) and the training file from phase0.yaml, and the quota rule from incremental.yaml (the
phases whose replay it plans).
"""
import argparse
import sys

from maskrcnn_benchmark.lst.experiment import Experiment
from maskrcnn_benchmark.lst.phase_config import load_yaml_config, phase_config, phase_yaml, train_annotation_file
from maskrcnn_benchmark.utils.miscellaneous import save_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-dir", required=True, help="folder with phase0.yaml and incremental.yaml")
    parser.add_argument("--experiment-dir", help="folder with phases.json and the phase folders")
    parser.add_argument("--phase", type=int, help="phase index t")
    parser.add_argument("--describe", action="store_true",
                        help="print BASE_SIZE PHASE_SIZE REPLAY_QUOTA_RULE SEED TRAIN_ANNOTATION_FILE and exit")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    try:
        if args.describe:
            config = load_yaml_config(phase_yaml(args.config_dir, 0), args.opts)
            incremental = load_yaml_config(phase_yaml(args.config_dir, 1), args.opts)
            lst = config.MODEL.LST
            print(lst.BASE_SIZE, lst.PHASE_SIZE, incremental.MODEL.LST.REPLAY_QUOTA_RULE, config.SEED,
                  train_annotation_file(config))
            return 0
        if args.experiment_dir is None or args.phase is None:
            parser.error("--experiment-dir and --phase are required (or --describe)")
        config = phase_config(args.config_dir, args.experiment_dir, args.phase, args.opts)
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit("error: {}".format(error.args[0] if error.args else error))
    path = Experiment(args.experiment_dir).phase(args.phase).config
    save_config(config, path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
