"""Evaluate a trained detector: ``python tools/test_net.py --config-file CONFIG [--ckpt FILE] [KEY VALUE ...]``.

The weights are ``--ckpt`` if given, else the last checkpoint of OUTPUT_DIR, else MODEL.WEIGHT.
Results go to OUTPUT_DIR/inference/<dataset>/ for every DATASETS.TEST entry. Distributed like
train_net.py (torchrun).

``--calibration-gammas G,G,...`` (one comma-separated argument) chooses NorCal's
TEST.CALIBRATION.GAMMA instead: DATASETS.TEST must be one set of training images; each gamma is
evaluated on it (OUTPUT_DIR/calibration/) and the best (mask AP) is printed and written to
OUTPUT_DIR/calibration_gamma.json.
"""
# The custom-environment hook runs before anything else is imported (upstream's rule).
from maskrcnn_benchmark.utils.env import setup_environment  # noqa: F401 isort:skip

import argparse

from maskrcnn_benchmark.config import cfg
from maskrcnn_benchmark.engine.cli import (
    add_common_arguments,
    init_distributed,
    leave_distributed,
    load_config,
    parse_arguments,
    run_tool_main,
    setup_seed,
)
from maskrcnn_benchmark.engine.inference import choose_calibration_gamma, run_test
from maskrcnn_benchmark.lst import ResolvedPhase
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer
from maskrcnn_benchmark.utils.collect_env import collect_env_info
from maskrcnn_benchmark.utils.comm import get_rank
from maskrcnn_benchmark.utils.logger import setup_logger


def calibration_gammas(text):
    """The gammas of ``--calibration-gammas``: comma-separated floats >= 0."""
    try:
        gammas = [float(g) for g in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected comma-separated numbers, e.g. 0,0.5,1, got {!r}".format(text))
    if any(not g >= 0 for g in gammas):
        raise argparse.ArgumentTypeError("gammas must be >= 0, got {!r}".format(text))
    return gammas


def main():
    parser = argparse.ArgumentParser(description="PyTorch Object Detection Inference")
    parser.add_argument(
        "--ckpt", default=None,
        help="The path to the checkpoint for test, default is the latest checkpoint.",
    )
    parser.add_argument(
        "--calibration-gammas", type=calibration_gammas, default=None, metavar="G,G,...",
        help="choose NorCal's TEST.CALIBRATION.GAMMA among these on DATASETS.TEST (training images)",
    )
    add_common_arguments(parser)
    args = parse_arguments(parser)

    load_config(cfg, args.config_file, args.opts)
    _, num_processes = init_distributed(cfg, args.local_rank)

    logger = setup_logger("maskrcnn_benchmark", "", get_rank())
    setup_seed(cfg, logger)
    logger.info("Using %d processes (MODEL.DEVICE %s)", num_processes, cfg.MODEL.DEVICE)
    logger.info(cfg)
    logger.info("Collecting env info (might take some time)")
    logger.info("\n%s", collect_env_info())

    model = build_detection_model(cfg)
    model.to(cfg.MODEL.DEVICE)

    checkpointer = DetectronCheckpointer(cfg, model, save_dir=cfg.OUTPUT_DIR)
    ckpt = cfg.MODEL.WEIGHT if args.ckpt is None else args.ckpt
    checkpointer.load(ckpt, use_latest=args.ckpt is None)

    # An LST phase config is evaluated on the phase's classes, with the old / new / all groups.
    phase = ResolvedPhase.from_config(cfg)
    options = phase.evaluation_options() if phase is not None else {}
    if args.calibration_gammas is not None:
        best = choose_calibration_gamma(cfg, model, num_processes > 1, args.calibration_gammas, **options)
        if best is not None:
            print("TEST.CALIBRATION.GAMMA {!r}".format(best))
    else:
        run_test(cfg, model, distributed=num_processes > 1, **options)
    leave_distributed()


if __name__ == "__main__":
    run_tool_main(main, "test_net.py")
