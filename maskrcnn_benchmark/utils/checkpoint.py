"""Save and resume training state; load pretrained weights from files, URLs and the model catalog.

A checkpoint is ``{"model", "optimizer", "scheduler", <extra checkpointables>, **kwargs}`` written
to ``<save_dir>/<name>.pth``; ``<save_dir>/last_checkpoint`` names the newest one. Both writes
are atomic (temporary file in the same folder, fsync, rename), so a run killed while saving
leaves the previous checkpoint and tag intact.

Loading uses ``torch.load(weights_only=True)``, which accepts tensors, numbers, strings and
containers but no other Python objects (unpickling those can run arbitrary code). Only this
run's own checkpoints (files inside ``save_dir``) fall back to ``weights_only=False`` when they
hold such objects, e.g. something passed to ``save(**kwargs)``; any other file is refused with an
explanation of how to convert it.

Resuming restores the optimizer's state (momentum buffers) and the scheduler's position (the
iteration), but the hyperparameters stay those the optimizer and scheduler were built with from
the config (SOLVER.BASE_LR and its bias factor, MOMENTUM, WEIGHT_DECAY, STEPS, GAMMA, WARMUP_*):
after a diverging run one can lower SOLVER.BASE_LR and resume. Every difference from the
checkpoint's is logged with the learning rate now in force (``ConfigSolverSettings``).

Bad files give one-line errors with the path, the cause and the fix: a truncated or corrupt
checkpoint (CheckpointFileError), an empty or garbled ``last_checkpoint`` (ValueError; it never
means "start from scratch"), a failed write such as a full disk (OSError; the previous checkpoint
and tag are left intact).
"""
import logging
import os
import shutil
from collections.abc import Mapping

import torch

from maskrcnn_benchmark.utils.c2_model_loading import load_c2_format
from maskrcnn_benchmark.utils.comm import is_main_process
from maskrcnn_benchmark.utils.imports import import_file
from maskrcnn_benchmark.utils.miscellaneous import atomic_torch_save, atomic_write_text
from maskrcnn_benchmark.utils.model_serialization import load_state_dict, load_torch_file
from maskrcnn_benchmark.utils.model_zoo import cache_url
from maskrcnn_benchmark.utils.torchvision_model_loading import (
    is_torchvision_resnet_state_dict,
    torchvision_resnet_to_body_state_dict,
)

LAST_CHECKPOINT_TAG = "last_checkpoint"


def _is_inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


# State-dict entries of the optimizer's parameter groups and of WarmupMultiStepLR that come from
# the config, and the config keys they come from.
GROUP_KEYS = {
    "initial_lr": "SOLVER.BASE_LR (x SOLVER.BIAS_LR_FACTOR for biases)",
    "momentum": "SOLVER.MOMENTUM",
    "weight_decay": "SOLVER.WEIGHT_DECAY (SOLVER.WEIGHT_DECAY_BIAS for biases)",
    "dampening": "the optimizer's dampening",
    "nesterov": "the optimizer's nesterov",
}
SCHEDULER_KEYS = {
    "base_lrs": "SOLVER.BASE_LR (x SOLVER.BIAS_LR_FACTOR for biases)",
    "milestones": "SOLVER.STEPS",
    "gamma": "SOLVER.GAMMA",
    "warmup_factor": "SOLVER.WARMUP_FACTOR",
    "warmup_iters": "SOLVER.WARMUP_ITERS",
    "warmup_method": "SOLVER.WARMUP_METHOD",
}


def _short(value):
    """A value for a log line: lists of per-group numbers shown by their distinct values."""
    if isinstance(value, (list, tuple)) and len(value) > 4:
        distinct = sorted(set(value), key=value.index)
        return "{} for {} groups".format(distinct if len(distinct) > 1 else distinct[0], len(value))
    return repr(list(value) if isinstance(value, tuple) else value)


class ConfigSolverSettings:
    """The hyperparameters an optimizer and its scheduler were built with, to put back after a
    checkpoint has been loaded into them (``reapply``)."""

    def __init__(self, optimizer, scheduler):
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.groups = [{k: g[k] for k in GROUP_KEYS if k in g} for g in optimizer.param_groups]
        self.schedule = {k: getattr(scheduler, k) for k in SCHEDULER_KEYS
                         if scheduler is not None and hasattr(scheduler, k)}

    def reapply(self, source, logger=None):
        """Put the config's hyperparameters back after loading ``source``; returns the list of
        differences "<config key>: checkpoint X, config Y" (empty: nothing changed)."""
        changes = {}
        for key, value in self.schedule.items():
            loaded = getattr(self.scheduler, key)
            if loaded != value:
                changes.setdefault(SCHEDULER_KEYS[key], (loaded, value))
                setattr(self.scheduler, key, value)
        if len(self.groups) == len(self.optimizer.param_groups):
            for fresh, group in zip(self.groups, self.optimizer.param_groups):
                for key, value in fresh.items():
                    if group.get(key) != value:
                        changes.setdefault(GROUP_KEYS[key], (
                            [g.get(key) for g in self.optimizer.param_groups],
                            [f[key] for f in self.groups]))
                        group[key] = value
        if not changes:
            return []
        if self.scheduler is not None:
            lrs = self.scheduler.get_lr()
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
            self.scheduler._last_lr = list(lrs)
        described = ["{}: checkpoint {}, config {}".format(key, _short(old), _short(new))
                     for key, (old, new) in changes.items()]
        (logger or logging.getLogger(__name__)).warning(
            "Resuming from %s with solver settings that differ from the checkpoint's; the config's "
            "apply from here on: %s; learning rate now %s", source, "; ".join(described),
            _short([g["lr"] for g in self.optimizer.param_groups]))
        return described


def _write_error(path, error, save_dir, previous):
    """OSError naming the checkpoint file that could not be written, the cause and the fix."""
    if isinstance(error, OSError) and error.errno is not None:
        cause = os.strerror(error.errno)
    else:
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    free_mb = shutil.disk_usage(save_dir).free / 2 ** 20
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    return OSError(
        f"Could not write checkpoint {path}: {cause} ({free_mb:.0f} MB free in {save_dir}); {kept}. "
        f"Free disk space there (or save less often: SOLVER.CHECKPOINT_PERIOD), then rerun to resume"
    )


def tagged_checkpoint_file(save_dir, logger=None):
    """Path of the checkpoint that ``<save_dir>/last_checkpoint`` names, or "" if there is no tag.

    Tags hold a path relative to ``save_dir``; upstream's absolute paths are read too and, if
    the folder has moved since, looked up by file name in ``save_dir``. A tag that is empty or
    not one line of text is a ValueError (resuming must not silently start over).
    """
    tag_path = os.path.join(save_dir, LAST_CHECKPOINT_TAG)
    try:
        with open(tag_path, "rb") as tag:
            content = tag.read()
    except OSError:  # no tag, or removed by another process meanwhile
        return ""
    try:
        tagged = content.decode("utf-8").strip()
    except UnicodeDecodeError:
        tagged = None
    if not tagged or "\n" in tagged or "\x00" in tagged:
        raise ValueError(
            f"{tag_path} is {'empty' if not content.strip() else 'garbled'} ({content[:40]!r}); it "
            f"names the checkpoint to resume from: write the file name of one (e.g. "
            f"model_0005000.pth) into it, or delete it to start training afresh"
        )
    if not os.path.isabs(tagged):
        return os.path.join(save_dir, tagged)
    moved = os.path.join(save_dir, os.path.basename(tagged))
    if not os.path.exists(tagged) and os.path.exists(moved):
        (logger or logging.getLogger(__name__)).info(
            "%s no longer exists; using %s from the same folder", tagged, moved)
        return moved
    return tagged


class Checkpointer:
    """Saves and restores a model with its optimizer, scheduler and any extra stateful objects.

    Args:
        model (nn.Module): possibly wrapped in (Distributed)DataParallel.
        optimizer, scheduler: restored when a checkpoint holds their state.
        save_dir (str): folder of the ``.pth`` files and of the ``last_checkpoint`` tag; ""
            disables saving and resuming.
        save_to_disk (bool or None): whether :meth:`save` writes; None means on the main
            process only (upstream passes ``get_rank() == 0``).
        logger (logging.Logger, optional)
        **extra_checkpointables: further objects with ``state_dict()`` / ``load_state_dict()``
            (a GradScaler, a sampler's position, ...), saved and restored under their keyword.
    """

    def __init__(self, model, optimizer=None, scheduler=None, save_dir="", save_to_disk=None,
                 logger=None, **extra_checkpointables):
        for name, obj in extra_checkpointables.items():
            if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
                raise TypeError(
                    f"extra checkpointable '{name}' ({type(obj).__name__}) needs state_dict() and "
                    f"load_state_dict() methods"
                )
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.extra_checkpointables = extra_checkpointables
        self.save_dir = save_dir
        self.save_to_disk = is_main_process() if save_to_disk is None else save_to_disk
        self.logger = logger if logger is not None else logging.getLogger(__name__)

    def _stateful_objects(self):
        """(name, object or None) for every state restored from and written to a checkpoint."""
        return [("optimizer", self.optimizer), ("scheduler", self.scheduler),
                *self.extra_checkpointables.items()]

    def save(self, name, skip=(), **kwargs):
        """Write ``<save_dir>/<name>.pth`` (model, optimizer, scheduler, extras and ``kwargs``,
        e.g. ``iteration``) and tag it as the last checkpoint. Extra checkpointables named in
        ``skip`` are left out."""
        if not self.save_dir or not self.save_to_disk:
            return
        clashes = sorted(set(kwargs) & ({"model"} | {key for key, _ in self._stateful_objects()}))
        if clashes:
            raise ValueError(f"save() keyword(s) {clashes} would overwrite the checkpoint's own entries; rename them")
        data = {"model": self.model.state_dict()}
        for key, obj in self._stateful_objects():
            if obj is not None and key not in skip:
                data[key] = obj.state_dict()
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", save_file)
        previous = self.get_checkpoint_file() if self.has_checkpoint() else ""
        try:
            atomic_torch_save(data, save_file)
            self.tag_last_checkpoint(save_file)
        except (OSError, RuntimeError) as error:  # torch's zip writer reports a full disk as RuntimeError
            raise _write_error(save_file, error, self.save_dir, previous) from error

    def load(self, f=None, use_latest=True):
        """Load the last checkpoint of ``save_dir`` if ``use_latest`` and one is tagged, else ``f``.

        Returns the checkpoint's remaining entries (e.g. ``{"iteration": 90000}``), or {} when
        there is nothing to load. ``f`` may be a path (str or os.PathLike), or for a
        DetectronCheckpointer also an http(s) URL or a ``catalog://`` name.
        """
        f = os.fspath(f) if f else f
        if use_latest and self.has_checkpoint():
            latest = self.get_checkpoint_file()
            if latest and not os.path.exists(latest):
                raise FileNotFoundError(
                    f"{os.path.join(self.save_dir, LAST_CHECKPOINT_TAG)} names {latest}, which does "
                    f"not exist. Restore that file to resume, or delete the last_checkpoint file to "
                    f"start from {f or 'scratch'} instead."
                )
            f = latest or f
        if not f:
            self.logger.info("No checkpoint found. Initializing model from scratch")
            return {}
        self.logger.info("Loading checkpoint from %s", f)
        checkpoint = self._load_file(f)
        self._load_model(checkpoint)
        config_settings = ConfigSolverSettings(self.optimizer, self.scheduler) if self.optimizer else None
        for name, obj in self._stateful_objects():
            if name not in checkpoint:
                continue
            state = checkpoint.pop(name)
            if obj is not None:
                self.logger.info("Loading %s from %s", name, f)
                obj.load_state_dict(state)
        if config_settings is not None:
            config_settings.reapply(f, self.logger)
        return checkpoint

    def load_model_weights(self, f):
        """Load only the model's weights from ``f``, never the optimizer, scheduler or iteration
        it may also hold: for a new run that starts from another run's trained model (cRT)."""
        f = os.fspath(f)
        self.logger.info("Loading the model weights of %s", f)
        self._load_model(self._load_file(f))

    def has_checkpoint(self):
        return bool(self.save_dir) and os.path.exists(os.path.join(self.save_dir, LAST_CHECKPOINT_TAG))

    def get_checkpoint_file(self):
        """Path of the tagged checkpoint, or "" if there is no tag (see tagged_checkpoint_file)."""
        return tagged_checkpoint_file(self.save_dir, self.logger)

    def tag_last_checkpoint(self, last_filename):
        """Record ``last_filename`` in ``<save_dir>/last_checkpoint``, relative to ``save_dir`` when inside it."""
        if _is_inside(last_filename, self.save_dir):
            recorded = os.path.relpath(os.path.realpath(last_filename), os.path.realpath(self.save_dir))
        else:
            recorded = os.path.abspath(last_filename)
        atomic_write_text(os.path.join(self.save_dir, LAST_CHECKPOINT_TAG), recorded)

    def _load_file(self, f):
        """A checkpoint dict with a "model" entry from a ``.pth`` file (bare state dicts get wrapped)."""
        if not os.path.isfile(f):
            raise FileNotFoundError(
                f"Checkpoint file {f} does not exist. Check MODEL.WEIGHT (or the path passed to "
                f"load()); DetectronCheckpointer also accepts http(s) URLs and catalog:// names."
            )
        own = bool(self.save_dir) and _is_inside(f, self.save_dir)
        fix = (f"write the file name of an earlier checkpoint into "
               f"{os.path.join(self.save_dir, LAST_CHECKPOINT_TAG)} to resume from it, or delete "
               f"the file to start afresh") if own else "replace it with an intact copy"
        loaded = load_torch_file(f, allow_python_objects=own, fix=fix)
        if not isinstance(loaded, Mapping):
            raise TypeError(
                f"{f} holds a {type(loaded).__name__}, not a state dict: save model.state_dict() "
                f"(or a dict with a 'model' entry) instead of the object itself"
            )
        return dict(loaded) if "model" in loaded else {"model": loaded}

    def _load_model(self, checkpoint):
        load_state_dict(self.model, checkpoint.pop("model"))


class DetectronCheckpointer(Checkpointer):
    """A Checkpointer whose :meth:`load` also takes ``catalog://`` names, http(s) URLs and Caffe2 ``.pkl`` files."""

    def __init__(self, cfg, model, optimizer=None, scheduler=None, save_dir="", save_to_disk=None,
                 logger=None, **extra_checkpointables):
        super().__init__(model, optimizer, scheduler, save_dir, save_to_disk, logger, **extra_checkpointables)
        self.cfg = cfg.clone()

    def _load_file(self, f):
        if f.startswith("catalog://"):
            paths_catalog = import_file("maskrcnn_benchmark.config.paths_catalog", self.cfg.PATHS_CATALOG, True)
            catalog_f = paths_catalog.ModelCatalog.get(f[len("catalog://"):])
            self.logger.info("%s points to %s", f, catalog_f)
            f = catalog_f
        if f.startswith(("http://", "https://")):
            cached_f = cache_url(f)
            self.logger.info("url %s cached in %s", f, cached_f)
            f = cached_f
        if f.endswith(".pkl"):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"Caffe2 weights file {f} does not exist. Check MODEL.WEIGHT.")
            return load_c2_format(self.cfg, f)
        loaded = super()._load_file(f)
        if is_torchvision_resnet_state_dict(loaded["model"]):
            # torchvision ImageNet weights: stem names and BatchNorm eps folded for FrozenBatchNorm2d.
            # They expect MODEL.RESNETS.STRIDE_IN_1X1 False and torchvision's RGB [0, 1] normalisation.
            self.logger.info("%s is a torchvision ResNet state dict; converting it for the body", f)
            loaded["model"] = torchvision_resnet_to_body_state_dict(loaded["model"])
        return loaded
