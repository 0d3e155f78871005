"""Small file helpers: directories, atomic writes (text, JSON, torch.save), labels.json and config.yml."""
import json
import logging
import os
import uuid
from contextlib import contextmanager

import torch

from .comm import is_main_process


def mkdir(path):
    os.makedirs(path, exist_ok=True)


@contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file beside ``path``; when the block succeeds, make it ``path`` atomically.

    Readers see the old file or the complete new one, never a partial write; if the block raises,
    ``path`` is untouched and the temporary file is removed. ``mode`` is "w" or "wb".
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp_path, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)  # make the rename itself durable
    finally:
        os.close(directory_fd)


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(obj, path):
    """``json.dump(obj)`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f)


def atomic_torch_save(obj, path):
    """``torch.save(obj, path)`` atomically: ``path`` holds its old content or the complete new one."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_labels(dataset_list, output_dir):
    """Write ``labels.json``: category id -> category name, from every dataset (as upstream)."""
    if not is_main_process():
        return
    logger = logging.getLogger(__name__)
    ids_to_labels = {}
    for dataset in dataset_list:
        if hasattr(dataset, "categories"):
            ids_to_labels.update(dataset.categories)
        else:
            logger.warning("Dataset %s has no 'categories' attribute; labels.json will lack it",
                           type(dataset).__name__)
    if ids_to_labels:
        labels_file = os.path.join(output_dir, "labels.json")
        logger.info("Saving labels mapping into %s", labels_file)
        atomic_write_text(labels_file, json.dumps(ids_to_labels, indent=2))


def save_config(cfg, path):
    """Write the merged config as YAML (rank 0 only)."""
    if is_main_process():
        atomic_write_text(path, cfg.dump())
