"""The training loop (``do_train``) of maskrcnn-benchmark on modern PyTorch.

Per iteration: forward under the DTYPE's autocast, sum of the losses, backward (loss-scaled for
float16), SGD step, LR-scheduler step. Every 20 iterations a log line
``eta, iter, <meter>: median (global_avg), lr, max mem``; checkpoints every
``checkpoint_period`` iterations and ``model_final`` at the end; optional periodic validation
and TensorBoard scalars.

Additions to upstream:
* a non-finite loss stops training with a FloatingPointError before the step, so no checkpoint
  of the broken state is written;
* a batch with an image without annotations is skipped (no step), as upstream, but the
  iteration still counts for checkpoints and ``model_final``;
* checkpoints carry every process's random-number-generator states (``rng_states``); resuming
  restores them, so with DATALOADER.NUM_WORKERS 0 a resumed run takes exactly the random draws
  (flips, sampled anchors and RoIs) of an uninterrupted one. The data order itself is resumed
  by the data loader (``start_iter``). With data-loading workers, their transforms draw from
  streams that restart on resume.
"""
import datetime
import logging
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist

from maskrcnn_benchmark.data import make_data_loader
from maskrcnn_benchmark.utils.comm import gather, get_rank, get_world_size, is_main_process, reduce_dict, synchronize
from maskrcnn_benchmark.utils.metric_logger import MetricLogger

from .inference import inference, iou_types_of
from .mixed_precision import autocast
from .resume import check_start_iteration, non_finite_loss_message

LOG_PERIOD = 20  # iterations between log lines


def reduce_loss_dict(loss_dict):
    """Average the loss dict over all processes onto rank 0 (for logging; other ranks get partial sums)."""
    return reduce_dict(loss_dict, average=True)


def capture_rng_state():
    """This process's Python, NumPy, torch (and current CUDA device) generator states, as tensors
    and plain values that ``torch.load(weights_only=True)`` accepts."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state):
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _any_process(flag, device):
    """True if ``flag`` is True on any process (a collective: every process must call it)."""
    if get_world_size() == 1:
        return flag
    flag_tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(flag_tensor, op=dist.ReduceOp.MAX)
    return bool(flag_tensor.item())


def _tensorboard_writer(cfg, start_iter):
    """SummaryWriter on OUTPUT_DIR/TENSORBOARD_EXPERIMENT (rank 0, when that key is set), else None.

    Events after ``start_iter`` left by an interrupted run are purged.
    """
    if not cfg.TENSORBOARD_EXPERIMENT or not is_main_process():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(os.path.join(cfg.OUTPUT_DIR, cfg.TENSORBOARD_EXPERIMENT), purge_step=start_iter + 1)


def _max_memory_mb(device):
    return torch.cuda.max_memory_allocated() / 1024.0 / 1024.0 if device.type == "cuda" else 0.0


def _check_losses_finite(loss_dict, iteration, device, output_dir):
    """FloatingPointError naming the non-finite losses when any process has one (a collective)."""
    non_finite = [name for name, loss in loss_dict.items() if not torch.isfinite(loss).all()]
    if _any_process(bool(non_finite), device):
        culprits = ", ".join(non_finite) if non_finite else "a loss on another process"
        raise FloatingPointError(non_finite_loss_message(iteration, culprits, output_dir))


def optimizer_step(loss_dict, optimizer, scaler, cfg, device, iteration, before_update=None):
    """Backward of the summed losses and one optimizer step (through ``scaler`` when given).

    The losses are cast to float32 and checked finite first; ``before_update()``, if given, runs
    between the backward and the update (e.g. to synchronise gradients outside DDP). Returns the
    float32 loss dict.
    """
    loss_dict = {name: loss.float() for name, loss in loss_dict.items()}
    _check_losses_finite(loss_dict, iteration, device, cfg.OUTPUT_DIR)
    losses = sum(loss_dict.values())
    optimizer.zero_grad()
    if scaler is not None:
        scaler.scale(losses).backward()
    else:
        losses.backward()
    if before_update is not None:
        before_update()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss_dict


def _train_step(model, images, targets, optimizer, scaler, cfg, device, iteration):
    """One forward/backward/optimizer step; returns the (float32) loss dict."""
    with autocast(cfg.DTYPE, device):
        loss_dict = model(images, targets)
    return optimizer_step(loss_dict, optimizer, scaler, cfg, device, iteration)


def _save_checkpoint(checkpointer, name, arguments):
    """Save ``name`` with ``arguments`` and every process's RNG states (a collective)."""
    rng_states = gather(capture_rng_state())
    checkpointer.save(name, **arguments, rng_states=rng_states)


def _restore_rng_states(rng_states, logger):
    if rng_states is None:
        return
    if len(rng_states) != get_world_size():
        logger.warning(
            "The checkpoint holds random-number-generator states of %d processes but this run has %d; "
            "random draws continue from fresh states (the run will not repeat an uninterrupted one exactly)",
            len(rng_states), get_world_size(),
        )
        return
    restore_rng_state(rng_states[get_rank()])


def _log_line(meters, prefix, eta, iteration, lr, memory):
    return meters.delimiter.join(
        [*prefix, f"eta: {eta}", f"iter: {iteration}", str(meters), f"lr: {lr:.6f}", f"max mem: {memory:.0f}"]
    )


def _validate(cfg, model, data_loader_val, device, logger, writer, eta, iteration, lr):
    """Upstream's periodic validation: inference + evaluation on a fresh loader, then the losses
    on ``data_loader_val`` (model in train mode, no gradients), logged with "[Validation]".

    The random-number generators are left as they were, so that validating does not change the
    training's random draws (and a run resumed from a checkpoint taken before a validation repeats
    the uninterrupted one).
    """
    rng_state = capture_rng_state()
    try:
        _validation_inference_and_losses(cfg, model, data_loader_val, device, logger, writer, eta, iteration, lr)
    finally:
        restore_rng_state(rng_state)


def _validation_inference_and_losses(cfg, model, data_loader_val, device, logger, writer, eta, iteration, lr):
    synchronize()
    inference(
        model,
        make_data_loader(cfg, is_train=False, is_distributed=get_world_size() > 1, is_for_period=True),
        dataset_name="[Validation]",
        iou_types=iou_types_of(cfg),
        box_only=cfg.MODEL.RPN_ONLY,
        device=cfg.MODEL.DEVICE,
        expected_results=cfg.TEST.EXPECTED_RESULTS,
        expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL,
        output_folder=None,
        dtype=cfg.DTYPE,
    )
    synchronize()
    model.train()
    meters_val = MetricLogger(delimiter="  ")
    with torch.no_grad():
        for images_val, targets_val, _ in data_loader_val:
            if _any_process(any(len(target) < 1 for target in targets_val), device):
                continue
            images_val = images_val.to(device)
            targets_val = [target.to(device) for target in targets_val]
            with autocast(cfg.DTYPE, device):
                loss_dict = model(images_val, targets_val)
            loss_dict_reduced = reduce_loss_dict({k: v.float() for k, v in loss_dict.items()})
            meters_val.update(loss=sum(loss_dict_reduced.values()), **loss_dict_reduced)
    synchronize()
    logger.info(_log_line(meters_val, ["[Validation]: "], eta, iteration, lr, _max_memory_mb(device)))
    if writer is not None:
        for name, meter in meters_val.meters.items():
            writer.add_scalar(f"validation/{name}", meter.global_avg, iteration)


def do_train(
    cfg,
    model,
    data_loader,
    data_loader_val,
    optimizer,
    scheduler,
    checkpointer,
    device,
    checkpoint_period,
    test_period,
    arguments,
    scaler=None,
    step=None,
    log_prefix=(),
    save_final=True,
):
    """Train from ``arguments["iteration"]`` to ``len(data_loader)`` (= SOLVER.MAX_ITER).

    Arguments:
        cfg: the frozen config (DTYPE, TENSORBOARD_EXPERIMENT, OUTPUT_DIR, test settings).
        model (nn.Module): the detector, possibly in DistributedDataParallel.
        data_loader: training loader from make_data_loader(is_train=True, start_iter=...).
        data_loader_val: loader for the periodic validation losses, or None.
        optimizer, scheduler: from make_optimizer / make_lr_scheduler; the scheduler steps
            once per iteration.
        checkpointer (Checkpointer): saves "model_{iteration:07d}" and "model_final".
        device (torch.device)
        checkpoint_period (int): iterations between checkpoints.
        test_period (int): iterations between validations (0: never).
        arguments (dict): "iteration" (the number of iterations done) and what else the
            checkpoints carry; updated in place. "rng_states" from a resumed checkpoint are
            restored and removed.
        scaler (torch.amp.GradScaler, optional): loss scaler for DTYPE "float16"; register it
            with the checkpointer (as "scaler") so that resuming restores it.
        step (callable, optional): ``step(iteration, images, targets) -> loss dict`` runs one
            training step on the batch (on ``device``); default: forward, backward and update.
            The episodic MWG training passes its episode here.
        log_prefix (sequence of str): words that start every log line.
        save_final (bool): save "model_final" after the last iteration (the episodic training
            saves it itself, after writing the generated rows).

    Raises FloatingPointError when a loss becomes infinite or NaN (no step is taken and no
    checkpoint is written for that iteration).
    """
    logger = logging.getLogger("maskrcnn_benchmark.trainer")
    logger.info("Start training")
    if step is None:
        def step(iteration, images, targets):
            return _train_step(model, images, targets, optimizer, scaler, cfg, device, iteration)
    meters = MetricLogger(delimiter="  ")
    max_iter = len(data_loader)
    start_iter = arguments["iteration"]
    check_start_iteration(start_iter, max_iter, cfg.OUTPUT_DIR, logger)
    rng_states = arguments.pop("rng_states", None)
    writer = _tensorboard_writer(cfg, start_iter)
    model.train()
    # Creating the iterator draws from torch's generator, so the saved states are restored after it.
    batches = iter(data_loader)
    _restore_rng_states(rng_states, logger)
    start_training_time = time.time()
    end = time.time()
    try:
        for iteration, (images, targets, indices) in enumerate(batches, start_iter):
            data_time = time.time() - end
            iteration = iteration + 1
            arguments["iteration"] = iteration

            if _any_process(any(len(target) < 1 for target in targets), device):
                logger.error(
                    "Iteration %d skipped: an image of the batch has no annotation (dataset indices %s, "
                    "boxes per image %s on this process)",
                    iteration, list(indices), [len(target) for target in targets],
                )
            else:
                images = images.to(device)
                targets = [target.to(device) for target in targets]
                loss_dict = step(iteration, images, targets)
                scheduler.step()

                loss_dict_reduced = reduce_loss_dict({k: v.detach() for k, v in loss_dict.items()})
                losses_reduced = sum(loss_dict_reduced.values())
                meters.update(loss=losses_reduced, **loss_dict_reduced)
                batch_time = time.time() - end
                meters.update(time=batch_time, data=data_time)
                if writer is not None:
                    writer.add_scalar("train/loss", losses_reduced.item(), iteration)
                    for name, value in loss_dict_reduced.items():
                        writer.add_scalar(f"train/{name}", value.item(), iteration)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], iteration)
            end = time.time()

            eta_string = "?"
            if "time" in meters.meters:
                eta_seconds = meters.time.global_avg * (max_iter - iteration)
                eta_string = str(datetime.timedelta(seconds=int(eta_seconds)))
            lr = optimizer.param_groups[0]["lr"]
            if iteration % LOG_PERIOD == 0 or iteration == max_iter:
                logger.info(_log_line(meters, list(log_prefix), eta_string, iteration, lr, _max_memory_mb(device)))
            if iteration % checkpoint_period == 0:
                _save_checkpoint(checkpointer, f"model_{iteration:07d}", arguments)
            if data_loader_val is not None and test_period > 0 and iteration % test_period == 0:
                _validate(cfg, model, data_loader_val, device, logger, writer, eta_string, iteration, lr)
            if iteration == max_iter and save_final:
                _save_checkpoint(checkpointer, "model_final", arguments)
    finally:
        if writer is not None:
            writer.close()

    total_training_time = time.time() - start_training_time
    iterations_run = max(1, max_iter - start_iter)
    logger.info(
        "Total training time: %s (%.4f s / it)",
        str(datetime.timedelta(seconds=int(total_training_time))), total_training_time / iterations_run,
    )
