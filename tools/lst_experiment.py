"""Paths and states of an LST experiment folder, for the shell scripts.

    python tools/lst_experiment.py OUT last-phase            # T, the index of the last phase
    python tools/lst_experiment.py OUT final-metrics         # phase T's metrics.json, or OUT/not_finished
    python tools/lst_experiment.py OUT final-dir             # phase T's folder, or OUT/not_finished
    python tools/lst_experiment.py OUT path PHASE FILE       # FILE: one of the names below
    python tools/lst_experiment.py OUT state PHASE           # not started | training | trained | finished
    python tools/lst_experiment.py OUT complete              # complete (every phase finished, the report
                                                             # written after the last) | incomplete
    python tools/lst_experiment.py OUT share-phase0 BASE     # copy BASE's finished phase 0 into OUT (if OUT's
                                                             # has not started; with BASE's phases.json if OUT
                                                             # has none): "copied" or "not copied"

FILE is dir, config, log, model_init, model_final, replay_plan, replay_balance, generator or
metrics (the phase's evaluation; an error before it exists). Paths are printed as OUT was given:
relative to the working folder when OUT is relative (so that the tables written from the
repository name their runs output/..., whatever the checkout's path), absolute otherwise.
"""
import argparse
import os
import sys

from maskrcnn_benchmark.lst.experiment import Experiment

PHASE_FILES = ("dir", "config", "log", "model_init", "model_final", "replay_plan", "replay_balance", "generator",
               "metrics")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment_dir", help="the experiment folder (holding phases.json)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("last-phase", help="print T, the index of the last phase")
    commands.add_parser("final-metrics", help="print the last phase's metrics.json, or the path OUT/not_finished "
                        "(which does not exist) while the experiment is not finished or not started")
    commands.add_parser("final-dir", help="print the last phase's folder, or the path OUT/not_finished (which "
                        "does not exist) before the classes are divided")
    path = commands.add_parser("path", help="print the path of one of a phase's files")
    path.add_argument("phase", type=int)
    path.add_argument("file", choices=PHASE_FILES)
    state = commands.add_parser("state", help="print the state of a phase")
    state.add_argument("phase", type=int)
    commands.add_parser("complete", help="print 'complete' when every phase is finished and the phase report was "
                        "written after the last one (nothing left for run_phases.sh to do), else 'incomplete'")
    share = commands.add_parser("share-phase0", help="start the experiment from another one's finished phase 0")
    share.add_argument("base", help="the experiment folder whose phase_0/ is copied (and its phases.json when the "
                       "experiment has none; otherwise the two must have the same base classes)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    experiment = Experiment(args.experiment_dir)

    def shown(path):
        return path if os.path.isabs(args.experiment_dir) else os.path.relpath(path)

    try:
        if args.command == "last-phase":
            print(experiment.last_phase)
            return 0
        if args.command == "final-metrics":
            print(shown(experiment.final_metrics_file))
            return 0
        if args.command == "final-dir":
            print(shown(experiment.final_phase_dir))
            return 0
        if args.command == "complete":
            print("complete" if experiment.complete else "incomplete")
            return 0
        if args.command == "share-phase0":
            print("copied" if experiment.share_phase0(args.base) else "not copied")
            return 0
        files = experiment.phase(args.phase)
        if args.command == "state":
            print(files.state)
        elif args.file == "metrics":
            metrics = files.metrics_file()
            if metrics is None:
                raise ValueError("phase {} of {} has not been evaluated yet ({} holds no metrics.json)".format(
                    args.phase, experiment.root, files.inference_dir))
            print(shown(metrics))
        else:
            print(shown(getattr(files, args.file)))
    except ValueError as error:
        sys.exit("lst_experiment.py: error: {}".format(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
