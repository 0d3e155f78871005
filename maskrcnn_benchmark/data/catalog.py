"""Datasets of one's own, without editing ``paths_catalog.py``.

Two ways to add a COCO- or LVIS-format dataset to the catalog that ``DATASETS.TRAIN`` and
``DATASETS.TEST`` names are looked up in:

* ``DATASETS.CATALOG_FILE``: a YAML file of entries ``name: {img_dir, ann_file, format}``, its paths
  relative to the YAML file's folder, e.g. ``my_lt_train: {img_dir: images/train,
  ann_file: annotations/train.json, format: lvis}``;
* ``register_dataset(name, img_dir, ann_file, format)`` from Python (paths relative to the working
  directory), before building the data loaders.

``load_dataset_catalog(cfg)`` returns the ``DatasetCatalog`` of ``cfg.PATHS_CATALOG`` with both
over it; every tool resolves dataset names through it.
"""
import os

import yaml

from maskrcnn_benchmark.utils.imports import import_file

# format -> dataset class in maskrcnn_benchmark.data.datasets
DATASET_FORMATS = {"lvis": "LVISDataset", "coco": "COCODataset"}
ENTRY_KEYS = ("img_dir", "ann_file", "format")

_registered = {}


def _catalog_entry(img_dir, ann_file, dataset_format, where, fix):
    """A DatasetCatalog entry with absolute paths; ``where`` and ``fix`` word the errors."""
    if dataset_format not in DATASET_FORMATS:
        raise ValueError("{}: format is '{}'; {}".format(
            where, dataset_format, fix("format: " + " or ".join(DATASET_FORMATS))))
    return {
        "img_dir": os.path.abspath(img_dir),
        "ann_file": os.path.abspath(ann_file),
        "factory": DATASET_FORMATS[dataset_format],
    }


def register_dataset(name, img_dir, ann_file, format):
    """Add a dataset to the catalog of every later ``load_dataset_catalog``.

    Arguments:
        name (str): the name to use in DATASETS.TRAIN / DATASETS.TEST.
        img_dir (str): the image folder (file names as in the annotation file).
        ann_file (str): the annotation JSON.
        format (str): "lvis" or "coco".
    """
    where = "register_dataset('{}')".format(name)
    _registered[name] = _catalog_entry(
        img_dir, ann_file, format, where, lambda hint: "pass {}".format(hint))


def read_catalog_file(path):
    """{name: DatasetCatalog entry} of a DATASETS.CATALOG_FILE (see the module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "DATASETS.CATALOG_FILE '{}' does not exist; point it at a YAML file of entries "
            "'name: {{img_dir: ..., ann_file: ..., format: lvis}}', or set it to ''".format(path))
    with open(path) as f:
        entries = yaml.safe_load(f) or {}
    if not isinstance(entries, dict):
        raise ValueError("{}: expected a mapping of dataset names to entries, got {}; write entries "
                         "'name: {{img_dir: ..., ann_file: ..., format: lvis}}'".format(path, type(entries).__name__))
    folder = os.path.dirname(os.path.abspath(path))
    catalog = {}
    for name, entry in entries.items():
        where = "{}: entry '{}'".format(path, name)

        def fix(hint):
            return "write {}: {{img_dir: ..., ann_file: ..., format: lvis}} ({})".format(name, hint)

        if not isinstance(entry, dict) or sorted(entry) != sorted(ENTRY_KEYS):
            keys = sorted(entry) if isinstance(entry, dict) else entry
            raise ValueError("{} has {}, not the keys {}; {}".format(
                where, keys, ", ".join(ENTRY_KEYS), fix("paths relative to this file")))
        catalog[name] = _catalog_entry(
            os.path.join(folder, entry["img_dir"]), os.path.join(folder, entry["ann_file"]),
            entry["format"], where, fix)
    return catalog


def _check_paths(entry, where):
    """Raise a clear error when a dataset's image folder or annotation file is missing."""
    for key, exists in (("ann_file", os.path.isfile), ("img_dir", os.path.isdir)):
        if not exists(entry[key]):
            raise FileNotFoundError("{}: {} {} does not exist; fix the path or create it".format(
                where, key, entry[key]))


class MergedDatasetCatalog:
    """One's own datasets ({name: (entry, where)}) over a PATHS_CATALOG DatasetCatalog; ``get`` as
    DatasetCatalog.get."""

    def __init__(self, base, own):
        self.base = base
        self.own = own

    def get(self, name):
        """{"factory": class name, "args": {"root": image folder, "ann_file": JSON path}}."""
        if name not in self.own:
            return self.base.get(name)
        entry = self.own[name][0]
        return dict(factory=entry["factory"], args=dict(root=entry["img_dir"], ann_file=entry["ann_file"]))


def load_dataset_catalog(cfg):
    """The DatasetCatalog of ``cfg.PATHS_CATALOG``, with the datasets of ``register_dataset`` and of
    ``cfg.DATASETS.CATALOG_FILE`` (which win on equal names) over it when there are any.

    Every dataset of DATASETS.TRAIN and DATASETS.TEST from the catalog file or register_dataset
    must exist on disk, and with a catalog file every other one must be in the paths catalog;
    otherwise a one-line ValueError or FileNotFoundError names the file, the entry and the fix.
    """
    catalog = import_file("maskrcnn_benchmark.config.paths_catalog", cfg.PATHS_CATALOG).DatasetCatalog
    own = {name: (entry, "register_dataset('{}')".format(name)) for name, entry in _registered.items()}
    catalog_file = cfg.DATASETS.CATALOG_FILE
    if catalog_file:
        own.update({name: (entry, "{}: entry '{}'".format(catalog_file, name))
                    for name, entry in read_catalog_file(catalog_file).items()})
    for key in ("TRAIN", "TEST"):
        for name in getattr(cfg.DATASETS, key):
            if name in own:
                _check_paths(*own[name])
            elif catalog_file:
                _check_known(catalog, name, key, catalog_file, own)
    return MergedDatasetCatalog(catalog, own) if own else catalog


def _check_known(catalog, name, key, catalog_file, own):
    """Raise a clear error when DATASETS.<key> names a dataset that the paths catalog lacks too."""
    try:
        catalog.get(name)
    except (KeyError, RuntimeError):
        raise ValueError(
            "DATASETS.{} names '{}', which is neither an entry of DATASETS.CATALOG_FILE {} (entries: {}) "
            "nor in the paths catalog; add '{}: {{img_dir: ..., ann_file: ..., format: lvis}}' to {} or "
            "fix the name".format(key, name, catalog_file, ", ".join(sorted(own)) or "none", name, catalog_file)
        ) from None
