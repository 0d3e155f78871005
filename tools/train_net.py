"""Train a detector: ``python tools/train_net.py --config-file CONFIG [KEY VALUE ...]``.

An LST phase config (MODEL.LST.PHASES_FILE, written by tools/lst_phase_config.py) trains and
evaluates on the phase's classes, with distillation (MODEL.LST.DISTILL), balanced replay
(DATALOADER.SAMPLER "BalancedReplaySampler") and, with MODEL.FEW_SHOT.ENABLED, episodic training
of the meta weight generator: see maskrcnn_benchmark/lst/.

``SEED`` (-1: drawn at random) seeds Python, NumPy and torch before the model is built and is
saved in ``OUTPUT_DIR/config.yml``, so ``--config-file OUTPUT_DIR/config.yml`` repeats the run;
a resumed run continues from the checkpoint's random states.

Multi-process (one process per GPU, or several on a CPU): ``torchrun --nproc_per_node N
tools/train_net.py ...`` (or ``python -m torch.distributed.run``). Training resumes from
``OUTPUT_DIR/last_checkpoint`` when it exists, and the final model is evaluated on
DATASETS.TEST unless ``--skip-test`` is given.
"""
# The custom-environment hook runs before anything else is imported (upstream's rule).
from maskrcnn_benchmark.utils.env import setup_environment  # noqa: F401 isort:skip

import argparse
import os

import torch

from maskrcnn_benchmark.config import cfg
from maskrcnn_benchmark.data import check_num_classes, class_image_counts, make_data_loader
from maskrcnn_benchmark.engine.cli import (
    add_common_arguments,
    init_distributed,
    leave_distributed,
    load_config,
    log_run_info,
    parse_arguments,
    run_tool_main,
    setup_seed,
)
from maskrcnn_benchmark.engine.inference import run_test
from maskrcnn_benchmark.engine.mixed_precision import make_grad_scaler
from maskrcnn_benchmark.engine.trainer import default_hooks, do_train
from maskrcnn_benchmark.lst import (
    GENERATOR_CHECKPOINT_KEY,
    EpisodicTrainer,
    FinalNovelWeights,
    ResolvedPhase,
    attach_distillation,
    build_distillation_teacher,
    build_episodic_weight_generator,
)
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.box_head.classifier_retraining import (
    freeze_all_but_classifier,
    start_classifier_retraining,
)
from maskrcnn_benchmark.solver import make_lr_scheduler, make_optimizer
from maskrcnn_benchmark.utils.checkpoint import LAST_CHECKPOINT_TAG, DetectronCheckpointer
from maskrcnn_benchmark.utils.comm import get_rank
from maskrcnn_benchmark.utils.logger import setup_logger
from maskrcnn_benchmark.utils.miscellaneous import mkdir, save_config


def train(cfg, local_rank, distributed, phase):
    """Train the config's model; ``phase`` is the ResolvedPhase of an LST phase config, or None."""
    model = build_detection_model(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    model.to(device)
    if cfg.MODEL.LST.DISTILL.ENABLED:
        # The frozen previous-phase model, owned by a loss hook: outside the optimizer, DDP and checkpoints.
        attach_distillation(model, build_distillation_teacher(cfg))

    if cfg.MODEL.CRT.ENABLED:
        freeze_all_but_classifier(model)
    optimizer = make_optimizer(cfg, model)
    weight_generator = None
    if cfg.MODEL.FEW_SHOT.ENABLED:
        # LST's meta weight generator: outside the model (and DDP), its parameters in the optimizer.
        weight_generator = build_episodic_weight_generator(cfg, phase, model, optimizer)
    scheduler = make_lr_scheduler(cfg, optimizer)
    scaler = make_grad_scaler(cfg.DTYPE, device)

    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[local_rank] if device.type == "cuda" else None,
            output_device=local_rank if device.type == "cuda" else None,
            # Upstream's broadcast_buffers=False (its modern name): FrozenBN has no statistics to synchronise.
            forward_sync_buffers=False,
        )

    arguments = {"iteration": 0}
    extra_checkpointables = {"scaler": scaler} if scaler is not None else {}
    if weight_generator is not None:
        extra_checkpointables[GENERATOR_CHECKPOINT_KEY] = weight_generator
    checkpointer = DetectronCheckpointer(
        cfg, model, optimizer, scheduler, cfg.OUTPUT_DIR, get_rank() == 0, **extra_checkpointables
    )
    if cfg.MODEL.CRT.ENABLED and not checkpointer.has_checkpoint():
        start_classifier_retraining(cfg, model, checkpointer)
    else:
        arguments.update(checkpointer.load(cfg.MODEL.WEIGHT))
    if "scaler" in arguments:  # a float16 checkpoint resumed with another DTYPE
        del arguments["scaler"]

    loader_options = phase.data_loader_options(cfg) if phase is not None else {}
    data_loader = make_data_loader(
        cfg, is_train=True, is_distributed=distributed, start_iter=arguments["iteration"], **loader_options
    )
    check_num_classes(cfg, [data_loader.dataset], [" + ".join(cfg.DATASETS.TRAIN)])
    if cfg.MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS == "federated":
        box_head = (model.module if distributed else model).roi_heads.box
        box_head.classification_loss.set_class_image_counts(
            class_image_counts(data_loader.dataset, cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES))
    test_period = cfg.SOLVER.TEST_PERIOD
    data_loader_val = None
    if test_period > 0:
        data_loader_val = make_data_loader(cfg, is_train=False, is_distributed=distributed, is_for_period=True,
                                           category_ids=loader_options.get("category_ids"))

    if weight_generator is not None:
        trainer = EpisodicTrainer(cfg, model, weight_generator, phase, data_loader, optimizer, scheduler,
                                  checkpointer, device, arguments)
        trainer.register_hooks(default_hooks(cfg.SOLVER.CHECKPOINT_PERIOD, test_period, data_loader_val,
                                             final_checkpoint=False))
        trainer.register_hooks([FinalNovelWeights()])
        trainer.train()
    else:
        do_train(cfg, model, data_loader, data_loader_val, optimizer, scheduler, checkpointer, device,
                 cfg.SOLVER.CHECKPOINT_PERIOD, test_period, arguments)
    return model


def train_and_test(cfg, local_rank, distributed, phase, skip_test):
    """Train, then evaluate the final model unless ``skip_test``; the model (which holds the
    process group when distributed) is not kept beyond, so that leave_distributed() can end the
    group's worker threads."""
    model = train(cfg, local_rank, distributed, phase)
    if not skip_test:
        run_test(cfg, model, distributed, **(phase.evaluation_options() if phase is not None else {}))


def main():
    parser = argparse.ArgumentParser(description="PyTorch Object Detection Training")
    add_common_arguments(parser)
    parser.add_argument("--skip-test", dest="skip_test", action="store_true", help="Do not test the final model")
    args = parse_arguments(parser)

    load_config(cfg, args.config_file, args.opts)
    local_rank, num_processes = init_distributed(cfg, args.local_rank)
    distributed = num_processes > 1

    if cfg.OUTPUT_DIR:
        mkdir(cfg.OUTPUT_DIR)
    logger = setup_logger("maskrcnn_benchmark", cfg.OUTPUT_DIR, get_rank())
    output_config_path = os.path.join(cfg.OUTPUT_DIR, "config.yml")
    resuming = os.path.isfile(os.path.join(cfg.OUTPUT_DIR, LAST_CHECKPOINT_TAG))
    setup_seed(cfg, logger, output_config_path if resuming else None)
    log_run_info(logger, cfg, args, num_processes)
    logger.info("Saving config into: %s", output_config_path)
    save_config(cfg, output_config_path)

    train_and_test(cfg, local_rank, distributed, ResolvedPhase.from_config(cfg), args.skip_test)
    leave_distributed()


if __name__ == "__main__":
    run_tool_main(main, "train_net.py")
