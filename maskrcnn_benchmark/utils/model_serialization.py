"""Load a state dict into a model whose parameter names may carry extra prefixes.

Pretrained weights name their tensors after the network they came from ("conv1.weight",
"layer1.0.bn1.weight"); the detector nests the same modules deeper
("backbone.body.stem.conv1.weight", "backbone.body.layer1.0.bn1.weight"). Every model key takes
the value of the loaded key that is its longest suffix, so both land in the right place.
"""
import io
import logging
import os
import pickle
import pickletools
import zipfile
from collections import OrderedDict, deque
from collections.abc import Mapping

import torch

logger = logging.getLogger(__name__)


def strip_prefix_if_present(state_dict, prefix):
    """Remove ``prefix`` from the front of every key if *all* keys start with it.

    Used for the "module." that DataParallel / DistributedDataParallel add to every name. When some
    key lacks the prefix, ``state_dict`` is returned unchanged.
    """
    if not all(key.startswith(prefix) for key in state_dict):
        return state_dict
    return OrderedDict((key[len(prefix):], value) for key, value in state_dict.items())


def _suffixes_longest_first(key):
    """"a.b.c" -> ["a.b.c", "b.c", "c"]: the suffixes of ``key`` that start at a "." boundary."""
    parts = key.split(".")
    return [".".join(parts[start:]) for start in range(len(parts))]


def _shape(value):
    """Shape of a tensor as a tuple; None for the rare non-tensor entry (a module's extra state)."""
    return tuple(value.shape) if hasattr(value, "shape") else None


_CLASS_ROW_KEYS = ("cls_score.weight", "cls_score.bias", "mask_fcn_logits.weight", "mask_fcn_logits.bias")


def _class_count_hint(mismatches):
    """A sentence about NUM_CLASSES when the mismatching tensors are class-specific predictor layers."""
    for _, loaded_key, _, loaded_shape in mismatches:
        if loaded_shape and loaded_key.endswith(_CLASS_ROW_KEYS):
            return (
                f" The checkpoint was trained with {loaded_shape[0]} classes (background included). "
                f"To keep its classes, set MODEL.ROI_BOX_HEAD.NUM_CLASSES to {loaded_shape[0]}. To "
                f"fine-tune on a different class set, trim the predictor: delete the "
                f"roi_heads.box.predictor.* and roi_heads.mask.predictor.mask_fcn_logits.* entries "
                f"from the checkpoint's 'model' dict and save it again, so that these layers keep "
                f"their fresh initialisation."
            )
    return ""


def _shape_mismatch_error(mismatches):
    """A RuntimeError listing every (model key, loaded key, model shape, loaded shape) and the fix."""
    lines = "\n".join(
        f"  model {model_key} {model_shape} <- checkpoint {loaded_key} {loaded_shape}"
        for model_key, loaded_key, model_shape, loaded_shape in mismatches
    )
    return RuntimeError(
        f"The checkpoint does not fit the model: {len(mismatches)} tensor(s) differ in shape:\n"
        f"{lines}\n"
        f"Either change the config so that the model has the checkpoint's shapes, or remove the "
        f"checkpoint keys listed above (they then keep the model's initialisation)."
        f"{_class_count_hint(mismatches)}"
    )


def align_and_update_state_dicts(model_state_dict, loaded_state_dict):
    """Copy loaded tensors into ``model_state_dict`` (in place) by longest-suffix key matching.

    A loaded key matches a model key when it equals the model key or ends it right after a ".";
    among matches the longest wins, so "layer1.0.bn1.weight" beats "bn1.weight" for
    "backbone.body.layer1.0.bn1.weight". Model keys without a match keep their values; loaded keys
    that match nothing (e.g. an ImageNet classifier "fc1000.weight") are ignored. Every mapping is
    logged. Raises RuntimeError, before changing anything, if a matched pair differs in shape.

    Returns:
        dict: model key -> the loaded key it was taken from.
    """
    mapping = {}
    for model_key in sorted(model_state_dict):
        for suffix in _suffixes_longest_first(model_key):
            if suffix in loaded_state_dict:
                mapping[model_key] = suffix
                break

    mismatches = [
        (model_key, loaded_key, _shape(model_state_dict[model_key]), _shape(loaded_state_dict[loaded_key]))
        for model_key, loaded_key in mapping.items()
        if _shape(model_state_dict[model_key]) != _shape(loaded_state_dict[loaded_key])
    ]
    if mismatches:
        raise _shape_mismatch_error(mismatches)

    model_width = max((len(key) for key in mapping), default=1)
    loaded_width = max((len(key) for key in mapping.values()), default=1)
    for model_key, loaded_key in mapping.items():
        value = loaded_state_dict[loaded_key]
        model_state_dict[model_key] = value
        logger.info("%-*s loaded from %-*s of shape %s", model_width, model_key, loaded_width,
                    loaded_key, _shape(value))

    not_loaded = sorted(set(model_state_dict) - set(mapping))
    if not_loaded:
        logger.info("%d model tensor(s) not in the checkpoint keep their values: %s",
                    len(not_loaded), ", ".join(not_loaded))
    unused = sorted(set(loaded_state_dict) - set(mapping.values()))
    if unused:
        logger.info("%d checkpoint tensor(s) match no model key and are ignored: %s",
                    len(unused), ", ".join(unused))
    return mapping


def load_state_dict(model, loaded_state_dict):
    """Load ``loaded_state_dict`` into ``model`` by longest-suffix matching, then strictly.

    A leading "module." (DataParallel / DistributedDataParallel) on every loaded key is removed
    first; a wrapped ``model`` is handled by the suffix matching itself.
    """
    model_state_dict = model.state_dict()
    loaded_state_dict = strip_prefix_if_present(loaded_state_dict, prefix="module.")
    align_and_update_state_dicts(model_state_dict, loaded_state_dict)
    model.load_state_dict(model_state_dict)


# Upstream names of the class-specific predictor layers (box classifier and regressor, mask logits).
# (The RPN head has a "bbox_pred" too: it is class-agnostic and kept.)
CLASS_SPECIFIC_KEYS = tuple("predictor." + name for name in (
    "cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias",
    "mask_fcn_logits.weight", "mask_fcn_logits.bias"))


class CheckpointFileError(RuntimeError):
    """A checkpoint file that cannot be read; the one-line message names the file, cause and fix."""


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _is_torch_file(path):
    """Whether ``path`` starts like a file of torch.save: a zip archive (since PyTorch 1.6, maybe
    truncated) or a pickle (the legacy format)."""
    with open(path, "rb") as f:
        start = f.read(2)
    return start == b"PK" or start[:1] == b"\x80"


def _pickle_error(path):
    """The error that reading the pickle of ``path`` (a torch.save zip archive's data.pkl, or the
    file's first pickle in the legacy format) to its end raises, else None: None for an intact
    file, which torch.load(weights_only=True) refuses only for its Python objects."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                stream = io.BytesIO(archive.read(next(
                    name for name in archive.namelist() if name.endswith("/data.pkl"))))
        else:
            stream = open(path, "rb")
        with stream:
            deque(pickletools.genops(stream), maxlen=0)
    except Exception as error:  # any malformed stream: unknown opcodes, truncation, a missing data.pkl
        return error
    return None


def _corrupt_file_error(path, error, fix):
    return CheckpointFileError(
        f"{path} cannot be read: it is truncated or corrupt ({os.path.getsize(path)} bytes; "
        f"{_first_line(error)}); {fix}")


def load_torch_file(path, allow_python_objects=False, fix=None):
    """``torch.load(path)`` on the CPU with ``weights_only=True``.

    Arguments:
        allow_python_objects (bool): retry with weights_only=False when the file holds Python
            objects besides tensors (only for files one trusts: unpickling can run code).
        fix (str, optional): what to do about a corrupt file, for its error message.

    Raises CheckpointFileError with the path, the cause and the fix: for a truncated, corrupt or
    foreign file, and, explaining the conversion, for an intact file with Python objects (without
    ``allow_python_objects``).
    """
    fix = fix or "replace it with an intact copy"
    if os.path.getsize(path) > 0 and not _is_torch_file(path):
        raise CheckpointFileError(
            f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle: "
            f"{os.path.getsize(path)} bytes of something else); {fix}")
    try:
        return torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as error:
        pickle_error = _pickle_error(path)
        if pickle_error is not None:
            raise _corrupt_file_error(path, pickle_error, fix) from error
        if not allow_python_objects:
            raise CheckpointFileError(
                f"{path} holds Python objects besides tensors, numbers, strings and containers, "
                f"which torch.load(weights_only=True) refuses because unpickling them can run "
                f"arbitrary code. If you trust the file, convert it once to plain weights and "
                f"load that instead: python -c \"import torch; c = torch.load('{path}', "
                f"weights_only=False); torch.save({{'model': c['model']}}, 'weights.pth')\""
            ) from error
    except Exception as error:  # a corrupt legacy pickle fails in many ways inside the unpickler
        raise _corrupt_file_error(path, error, fix) from error
    logger.warning("%s holds Python objects besides tensors; loading it with weights_only=False "
                   "because it is this run's own checkpoint", path)
    try:
        return torch.load(path, map_location=torch.device("cpu"), weights_only=False)
    except Exception as error:
        raise _corrupt_file_error(path, error, fix) from error


def load_checkpoint_model(path):
    """(model state dict, names of the other checkpoint entries) of a .pth file: a checkpoint dict
    with "model" (ours, upstream's) or a bare state dict. SystemExit naming the file otherwise."""
    try:
        checkpoint = load_torch_file(path)
    except CheckpointFileError as error:
        raise SystemExit(str(error)) from None
    if not isinstance(checkpoint, Mapping):
        raise SystemExit("{} holds a {}, not a checkpoint dict".format(path, type(checkpoint).__name__))
    if "model" not in checkpoint:
        return checkpoint, []
    return checkpoint["model"], sorted(key for key in checkpoint if key != "model")


def remove_class_specific_layers(state_dict):
    """``state_dict`` without the class-specific predictor layers (CLASS_SPECIFIC_KEYS), so that a
    model trained on other classes (e.g. COCO) initialises one with a different class set."""
    return OrderedDict((key, value) for key, value in state_dict.items()
                       if not key.endswith(CLASS_SPECIFIC_KEYS))
