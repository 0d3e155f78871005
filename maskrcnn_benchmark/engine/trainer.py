"""The training loop of maskrcnn-benchmark on modern PyTorch: a ``Trainer`` with a step and hooks.

``Trainer.run_step`` is one iteration's work; hooks (``HookBase``) do the rest around it
(checkpoints, validation, end-of-training work), so a method with another step (LST's episodic
training) subclasses ``Trainer`` and reuses the hooks. ``do_train`` keeps upstream's signature.

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
* Ctrl-C or SIGTERM stops training after the current iteration with a checkpoint of it
  (``TrainingStopped``, utils/stop_request.py), so that nothing trained is lost;
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
import signal
import time

import numpy as np
import torch
import torch.distributed as dist

from maskrcnn_benchmark.utils.comm import gather, get_rank, get_world_size, is_main_process, reduce_dict, synchronize
from maskrcnn_benchmark.utils.metric_logger import MetricLogger
from maskrcnn_benchmark.utils.stop_request import StopRequests, TrainingStopped

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


def any_process(flag, device):
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
    if any_process(bool(non_finite), device):
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
    """Upstream's periodic validation: inference + evaluation, then the losses on
    ``data_loader_val`` (model in train mode, no gradients), logged with "[Validation]".

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
        data_loader_val,
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
            if any_process(any(len(target) < 1 for target in targets_val), device):
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


class HookBase:
    """Work done around a Trainer's steps; ``self.trainer`` is set by Trainer.register_hooks."""

    trainer = None

    def before_train(self):
        """Before the first iteration (after the random states of a resumed run are restored)."""

    def after_step(self):
        """After iteration ``trainer.iter`` (1-based), logged or skipped."""

    def after_train(self):
        """After the last iteration, when the loop ended without an error."""


class PeriodicCheckpointer(HookBase):
    """Saves "model_{iteration:07d}" every ``period`` iterations."""

    def __init__(self, period):
        self.period = period

    def after_step(self):
        if self.trainer.iter % self.period == 0:
            self.trainer.save_checkpoint(f"model_{self.trainer.iter:07d}")


class FinalCheckpointer(HookBase):
    """Saves "model_final" after the last iteration (SOLVER.MAX_ITER)."""

    def after_step(self):
        if self.trainer.iter == self.trainer.max_iter:
            self.trainer.save_checkpoint("model_final")


class PeriodicValidation(HookBase):
    """Upstream's validation every ``period`` iterations on ``data_loader_val`` (see _validate)."""

    def __init__(self, period, data_loader_val):
        self.period = period
        self.data_loader_val = data_loader_val

    def after_step(self):
        trainer = self.trainer
        if trainer.iter % self.period == 0:
            _validate(trainer.cfg, trainer.model, self.data_loader_val, trainer.device, trainer.logger,
                      trainer.writer, trainer.eta_string(), trainer.iter, trainer.lr)


def default_hooks(checkpoint_period, test_period, data_loader_val, final_checkpoint=True):
    """Upstream's work around the steps: periodic checkpoints, periodic validation (when
    ``test_period`` > 0 and a loader is given) and, with ``final_checkpoint``, model_final."""
    hooks = [PeriodicCheckpointer(checkpoint_period)]
    if data_loader_val is not None and test_period > 0:
        hooks.append(PeriodicValidation(test_period, data_loader_val))
    if final_checkpoint:
        hooks.append(FinalCheckpointer())
    return hooks


class Trainer:
    """Trains from ``arguments["iteration"]`` to ``len(data_loader)`` (= SOLVER.MAX_ITER).

    Arguments:
        cfg: the frozen config (DTYPE, TENSORBOARD_EXPERIMENT, OUTPUT_DIR, test settings).
        model (nn.Module): the detector, possibly in DistributedDataParallel.
        data_loader: training loader from make_data_loader(is_train=True, start_iter=...).
        optimizer, scheduler: from make_optimizer / make_lr_scheduler; the scheduler steps
            once per iteration.
        checkpointer (Checkpointer): saves the checkpoints; a GradScaler registered with it as
            "scaler" scales the float16 losses.
        device (torch.device)
        arguments (dict): "iteration" (the number of iterations done) and what else the
            checkpoints carry; updated in place. "rng_states" from a resumed checkpoint are
            restored and removed.
        log_prefix (sequence of str): words that start every log line.

    Attributes set while training: ``iter`` (the current iteration, 1-based), ``start_iter``,
    ``max_iter``, ``writer`` (TensorBoard or None), ``lr``.
    """

    def __init__(self, cfg, model, data_loader, optimizer, scheduler, checkpointer, device, arguments,
                 log_prefix=()):
        self.cfg = cfg
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.checkpointer = checkpointer
        self.scaler = checkpointer.extra_checkpointables.get("scaler")
        self.device = device
        self.arguments = arguments
        self.log_prefix = list(log_prefix)
        self.logger = logging.getLogger("maskrcnn_benchmark.trainer")
        self.meters = MetricLogger(delimiter="  ")
        self.start_iter = self.iter = arguments["iteration"]
        self.max_iter = len(data_loader)
        self.writer = None
        self.lr = optimizer.param_groups[0]["lr"]
        self._hooks = []
        self._stop_requests = StopRequests(self.logger)
        self._saved = (None, "")  # the iteration and name of the last checkpoint saved

    def register_hooks(self, hooks):
        """Append ``hooks`` (HookBase); they run in registration order."""
        for hook in hooks:
            hook.trainer = self
            self._hooks.append(hook)

    def run_step(self, images, targets):
        """One forward/backward/optimizer step on a batch on ``device``; returns the float32 loss dict."""
        with autocast(self.cfg.DTYPE, self.device):
            loss_dict = self.model(images, targets)
        return self.optimizer_step(loss_dict)

    def optimizer_step(self, loss_dict, before_update=None):
        """:func:`optimizer_step` of this trainer's optimizer, scaler and iteration."""
        return optimizer_step(loss_dict, self.optimizer, self.scaler, self.cfg, self.device, self.iter,
                              before_update=before_update)

    def save_checkpoint(self, name, skip=()):
        """Save ``name`` with ``arguments`` and every process's RNG states (a collective); the
        checkpointer's extra checkpointables named in ``skip`` are left out."""
        rng_states = gather(capture_rng_state())
        self.checkpointer.save(name, skip=skip, **self.arguments, rng_states=rng_states)
        self._saved = (self.iter, name)

    def eta_string(self):
        if "time" not in self.meters.meters:
            return "?"
        eta_seconds = self.meters.time.global_avg * (self.max_iter - self.iter)
        return str(datetime.timedelta(seconds=int(eta_seconds)))

    def train(self):
        """Run the iterations left, then the hooks' after_train.

        Raises FloatingPointError when a loss becomes infinite or NaN (no step is taken and no
        checkpoint is written for that iteration), and TrainingStopped after SIGINT or SIGTERM
        (with a checkpoint of the last iteration run).
        """
        with self._stop_requests:
            self._train()
            if self._stop_requested():  # during the last iteration or after_train: model_final is saved
                self._stop()

    def _train(self):
        self.logger.info("Start training")
        check_start_iteration(self.start_iter, self.max_iter, self.cfg.OUTPUT_DIR, self.logger)
        rng_states = self.arguments.pop("rng_states", None)
        self.writer = _tensorboard_writer(self.cfg, self.start_iter)
        self.model.train()
        # Creating the iterator draws from torch's generator, so the saved states are restored after it.
        batches = iter(self.data_loader)
        _restore_rng_states(rng_states, self.logger)
        for hook in self._hooks:
            hook.before_train()
        start_training_time = time.time()
        try:
            self._run_iterations(batches)
        finally:
            if self.writer is not None:
                self.writer.close()
        for hook in self._hooks:
            hook.after_train()
        total_training_time = time.time() - start_training_time
        iterations_run = max(1, self.max_iter - self.start_iter)
        self.logger.info(
            "Total training time: %s (%.4f s / it)",
            str(datetime.timedelta(seconds=int(total_training_time))), total_training_time / iterations_run,
        )

    def _run_iterations(self, batches):
        end = time.time()
        for iteration, (images, targets, indices) in enumerate(batches, self.start_iter):
            data_time = time.time() - end
            self.iter = iteration + 1
            self.arguments["iteration"] = self.iter
            if any_process(any(len(target) < 1 for target in targets), self.device):
                self.logger.error(
                    "Iteration %d skipped: an image of the batch has no annotation (dataset indices %s, "
                    "boxes per image %s on this process)",
                    self.iter, list(indices), [len(target) for target in targets],
                )
            else:
                images = images.to(self.device)
                targets = [target.to(self.device) for target in targets]
                loss_dict = self.run_step(images, targets)
                self.scheduler.step()
                self._log_losses(loss_dict, batch_time=time.time() - end, data_time=data_time)
            end = time.time()
            self.lr = self.optimizer.param_groups[0]["lr"]
            if self.iter % LOG_PERIOD == 0 or self.iter == self.max_iter:
                self.logger.info(_log_line(self.meters, self.log_prefix, self.eta_string(), self.iter, self.lr,
                                           _max_memory_mb(self.device)))
            for hook in self._hooks:
                hook.after_step()
            if self.iter < self.max_iter and self._stop_requested():
                self._stop()

    def _stop_requested(self):
        """True when any process has received SIGINT or SIGTERM (a collective)."""
        return any_process(self._stop_requests.signum is not None, self.device)

    def _stop(self):
        """Save this iteration (unless saved, or none ran) and raise TrainingStopped."""
        if self._saved[0] != self.iter and self.iter > self.start_iter:
            self.save_checkpoint(f"model_{self.iter:07d}")
        save_dir = self.checkpointer.save_dir
        checkpoint_file = ""
        if save_dir:
            checkpoint_file = os.path.join(save_dir, self._saved[1] + ".pth") if self._saved[1] \
                else self.checkpointer.get_checkpoint_file()
        raise TrainingStopped(self._stop_requests.signum or signal.SIGTERM, self.iter, checkpoint_file)

    def _log_losses(self, loss_dict, batch_time, data_time):
        loss_dict_reduced = reduce_loss_dict({k: v.detach() for k, v in loss_dict.items()})
        losses_reduced = sum(loss_dict_reduced.values())
        self.meters.update(loss=losses_reduced, **loss_dict_reduced)
        self.meters.update(time=batch_time, data=data_time)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", losses_reduced.item(), self.iter)
            for name, value in loss_dict_reduced.items():
                self.writer.add_scalar(f"train/{name}", value.item(), self.iter)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.iter)


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
    hooks=(),
):
    """Upstream's training loop: a Trainer with the default hooks, then ``hooks``.

    Arguments are the Trainer's, plus ``data_loader_val`` (the periodic validation's loader, or
    None), ``checkpoint_period`` (iterations between checkpoints) and ``test_period``
    (iterations between validations; 0: never). Saves "model_{iteration:07d}" and "model_final".
    """
    trainer = Trainer(cfg, model, data_loader, optimizer, scheduler, checkpointer, device, arguments)
    trainer.register_hooks(default_hooks(checkpoint_period, test_period, data_loader_val))
    trainer.register_hooks(hooks)
    trainer.train()
    return trainer
