"""Small file helpers: directories, atomic writes, labels.json and config.yml."""
import json
import logging
import os

from .comm import is_main_process


def mkdir(path):
    os.makedirs(path, exist_ok=True)


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp_path, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


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
