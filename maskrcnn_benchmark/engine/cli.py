"""Set-up shared by the command-line tools: arguments, config merging with clear errors, devices,
the process group and the run's seed.

A process is one of a distributed run when WORLD_SIZE > 1 (set by torchrun /
torch.distributed.run). It then joins the process group over NCCL when MODEL.DEVICE is "cuda"
(one GPU per process, chosen by the local rank) or over gloo on the CPU.
"""
import argparse
import gc
import logging
import os
import sys

import torch
import torch.distributed as dist
import yaml

from maskrcnn_benchmark.config.config_file import merge_config_file
from maskrcnn_benchmark.config.value_checks import check_value_ranges
from maskrcnn_benchmark.data.catalog import load_dataset_catalog
from maskrcnn_benchmark.data.datasets.annotation_checks import AnnotationError
from maskrcnn_benchmark.data.datasets.evaluation.lvis.results_file import EvaluationInputError
from maskrcnn_benchmark.utils.collect_env import collect_env_info
from maskrcnn_benchmark.utils.comm import synchronize
from maskrcnn_benchmark.utils.model_serialization import CheckpointFileError
from maskrcnn_benchmark.utils.seed import draw_seed, saved_seed, seed_all_rng
from maskrcnn_benchmark.utils.stop_request import TrainingStopped

# Errors whose message already names the file, the record and the fix: a tool exits with that one
# line instead of a traceback. A non-finite loss (FloatingPointError) says which checkpoint exists.
INPUT_ERRORS = (AnnotationError, CheckpointFileError, EvaluationInputError, FloatingPointError)


def run_tool_main(main, tool_name):
    """Run a tool's ``main()``; an INPUT_ERRORS error ends the process with one line on stderr, and
    training stopped by a signal (after its checkpoint) with one line and the signal's exit status."""
    try:
        return main()
    except INPUT_ERRORS as error:
        sys.exit("{}: error: {}".format(tool_name, error))
    except TrainingStopped as stop:
        logging.getLogger(__name__).warning("%s: %s", tool_name, stop)
        sys.exit(stop.exit_status)


def add_common_arguments(parser):
    """--config-file, --local_rank/--local-rank and the trailing KEY VALUE config overrides."""
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--local_rank", "--local-rank", dest="local_rank", type=int, default=0,
        help="GPU of this process in a distributed run (ignored when the LOCAL_RANK variable is set, as by torchrun)",
    )
    parser.add_argument(
        "opts", help="Modify config options using the command-line: KEY VALUE pairs", default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def parse_arguments(parser, argv=None):
    """``parser.parse_args(argv)``, except that the parser's own options may also come after
    the trailing KEY VALUE config overrides (``... SOLVER.MAX_ITER 10 --skip-test``): an
    argument in a KEY position of the overrides that is one of the parser's options is moved in
    front of them (with its value, for an option that takes one) before parsing again."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parser.parse_args(argv).opts or []
    options, overrides = [], []
    position = 0
    while position < len(opts):
        token = opts[position]
        action = parser._option_string_actions.get(token.split("=", 1)[0])
        if action is None or len(overrides) % 2:
            overrides.append(token)
            position += 1
            continue
        takes_value = action.nargs is None and "=" not in token
        options.extend(opts[position:position + 1 + takes_value])
        position += 1 + takes_value
    if not options:
        return parser.parse_args(argv)
    return parser.parse_args(argv[:len(argv) - len(opts)] + options + overrides)


def load_config(cfg, config_file, opts):
    """Merge ``config_file`` and then the ``opts`` pairs into ``cfg`` and freeze it.

    Any problem (missing file, YAML syntax, unknown or renamed key, wrong value type, odd number
    of overrides, a DATASETS.CATALOG_FILE problem) ends the program with a one-line message naming
    the file or the options.
    """
    if not config_file:
        raise SystemExit("error: no config file given; pass --config-file path/to/config.yaml")
    if not os.path.isfile(config_file):
        raise SystemExit(f"error: config file {config_file} does not exist")
    try:
        merge_config_file(cfg, config_file)
    except (KeyError, FileNotFoundError, ValueError, AssertionError, yaml.YAMLError) as error:
        raise SystemExit(f"error in config file {config_file}: {_reason(error)}") from None
    try:
        cfg.merge_from_list(opts or [])
    except (KeyError, ValueError, AssertionError) as error:
        raise SystemExit(f"error in command-line config options {' '.join(opts)}: {_reason(error)}") from None
    try:
        check_value_ranges(cfg)
    except ValueError as error:
        raise SystemExit(f"error in the config ({config_file} and the command line): {error}") from None
    cfg.freeze()
    _check_device(cfg.MODEL.DEVICE)
    try:
        load_dataset_catalog(cfg)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {_reason(error)}") from None


def _reason(error):
    reason = error.args[0] if error.args else type(error).__name__
    return " ".join(str(reason).split())


def _check_device(device_name):
    try:
        device = torch.device(device_name)
    except RuntimeError:
        raise SystemExit(f"error: MODEL.DEVICE '{device_name}' is not a device; use 'cuda' or 'cpu'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "error: MODEL.DEVICE is 'cuda' but no CUDA GPU is available; add MODEL.DEVICE cpu to the "
            "command line to run on the CPU"
        )


def init_distributed(cfg, local_rank_argument):
    """Join the process group when WORLD_SIZE > 1; returns (local_rank, number of processes).

    The local rank comes from the LOCAL_RANK environment variable when set (torchrun), else
    from ``--local_rank``.
    """
    num_processes = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank_argument))
    if num_processes > 1:
        if torch.device(cfg.MODEL.DEVICE).type == "cuda":
            torch.cuda.set_device(local_rank)
            backend = "nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        synchronize()
    return local_rank, num_processes


def leave_distributed():
    """Leave the process group, if this process joined one (at the end of a tool).

    Its gloo worker threads end only when the last reference to the group goes, and a worker
    still releasing a tensor of the last collective while the interpreter shuts down aborts the
    process ("terminate called without an active exception"). So the objects in reference cycles
    that hold the group (a DistributedDataParallel model, held by the trainer that its hooks point
    back to) are collected first, while the interpreter runs.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def setup_seed(cfg, logger, resumed_config_file=None):
    """Resolve SEED and seed this process's generators (Python, NumPy, torch) with it.

    Every process uses the same SEED, so that what each builds at random (the model before DDP
    broadcasts it, LST's weight generator, which DDP does not hold, a test model without weights)
    starts identical. SEED -1 becomes rank 0's choice: the SEED of ``resumed_config_file`` (the
    config.yml of the interrupted run being resumed, so that its samplers keep their seed) when it
    holds one, else a seed drawn at random. The value is written into ``cfg`` (saved with it as
    config.yml) and logged. Call after init_distributed, before the model is built.
    """
    seed, origin = cfg.SEED, "from the config"
    if seed < 0:
        seed = saved_seed(resumed_config_file) if resumed_config_file else -1
        origin = "of the interrupted run ({})".format(resumed_config_file)
        if seed < 0:
            seed, origin = draw_seed(), "drawn at random (SEED -1)"
        if dist.is_available() and dist.is_initialized():
            chosen = [seed]
            dist.broadcast_object_list(chosen, src=0)
            seed = chosen[0]
        cfg.defrost()
        cfg.SEED = seed
        cfg.freeze()
    seed_all_rng(seed)
    logger.info("SEED %d (%s)", seed, origin)
    return seed


def log_run_info(logger, cfg, args, num_processes):
    """Log the process count, the arguments, the environment, the config file and the merged config."""
    logger.info("Using %d processes (MODEL.DEVICE %s)", num_processes, cfg.MODEL.DEVICE)
    logger.info(args)
    logger.info("Collecting env info (might take some time)")
    logger.info("\n%s", collect_env_info())
    logger.info("Loaded configuration file %s", args.config_file)
    with open(args.config_file) as config_file:
        logger.info("\n%s", config_file.read())
    logger.info("Running with config:\n%s", cfg)
