"""Data loaders from the config: datasets from the DatasetCatalog, samplers, batching.

Training: one loader over all DATASETS.TRAIN (concatenated), SOLVER.IMS_PER_BATCH / world size
images per process, SOLVER.MAX_ITER iterations, resumable at ``start_iter``. Test: one loader
per DATASETS.TEST entry, TEST.IMS_PER_BATCH / world size images per process, one pass.

Additions to upstream:
* DATALOADER.SAMPLER selects the training sampler ("" = upstream's, the LST baselines'
  "RepeatFactorSampler" / "ClassAwareSampler", or LST's "BalancedReplaySampler", whose batches
  hold (index, active label) pairs).
* With MODEL.LST.PHASES_FILE, LVIS-format datasets are restricted to the categories seen up to
  MODEL.LST.PHASE, labelled in the phases' order (see data/lst_phases.py).
* Every training sampler is seeded from DATALOADER.SEED, the default one included (a seeded
  permutation per epoch, where upstream used an unseeded RandomSampler on a single process), and
  resuming at ``start_iter`` yields exactly the index batches an uninterrupted run yields at
  those iterations (see IterationBasedBatchSampler).
"""
import bisect
import logging

import torch.utils.data

from maskrcnn_benchmark.utils.comm import get_rank, get_world_size
from maskrcnn_benchmark.utils.miscellaneous import save_labels

from . import datasets as D
from .catalog import load_dataset_catalog
from . import lst_phases
from . import samplers
from .collate_batch import BatchCollator
from .transforms import build_transforms

# DATALOADER.SAMPLER values: "" is upstream's random (or distributed) sampler.
TRAIN_SAMPLERS = ("", "RepeatFactorSampler", "ClassAwareSampler", "BalancedReplaySampler")

# Dataset classes that take remove_images_without_annotations (set to is_train).
_FILTERING_DATASETS = ("COCODataset", "LVISDataset")
# Dataset classes that take category_ids (the label space of an LST phase).
_CATEGORY_SUBSET_DATASETS = ("LVISDataset",)


def build_dataset(dataset_list, transforms, dataset_catalog, is_train=True, category_ids=None):
    """Datasets named in ``dataset_list`` (DatasetCatalog names).

    Arguments:
        dataset_list (list[str]): e.g. ("coco_2014_train", "coco_2014_valminusminival").
        transforms (callable): applied to each (image, target).
        dataset_catalog: has ``get(name)`` -> {"factory": class name in data.datasets,
            "args": constructor arguments}.
        is_train (bool): training drops images without annotations and concatenates all
            datasets into one; testing returns one dataset per name.
        category_ids (list[int] or None): the label space, in label order (label = 1 +
            position; other categories' annotations are dropped), e.g. an LST phase's seen
            categories; only LVIS-format datasets accept it. None: the dataset's own.

    Returns a list of datasets (a single one in training).
    """
    if not isinstance(dataset_list, (list, tuple)):
        raise RuntimeError("dataset_list should be a list of strings, got {}".format(dataset_list))
    if len(dataset_list) == 0:
        raise ValueError(
            "No dataset to build: set DATASETS.{} to names from the DatasetCatalog".format(
                "TRAIN" if is_train else "TEST"
            )
        )
    datasets = []
    for dataset_name in dataset_list:
        data = dataset_catalog.get(dataset_name)
        factory_name = data["factory"]
        factory = getattr(D, factory_name, None)
        if factory is None:
            raise ValueError(
                "Dataset '{}': unknown factory '{}'; known: {}".format(
                    dataset_name, factory_name, ", ".join(D.__all__)
                )
            )
        args = dict(data["args"])
        if factory_name in _FILTERING_DATASETS:
            args["remove_images_without_annotations"] = is_train
        args["transforms"] = transforms
        if category_ids is not None:
            if factory_name not in _CATEGORY_SUBSET_DATASETS:
                raise ValueError(
                    "Dataset '{}' ({}) cannot be restricted to an LST phase's categories; "
                    "MODEL.LST.PHASES_FILE needs LVIS-format datasets ({}).".format(
                        dataset_name, factory_name, ", ".join(_CATEGORY_SUBSET_DATASETS)
                    )
                )
            args["category_ids"] = list(category_ids)
        datasets.append(factory(**args))

    if not is_train:
        return datasets
    if len(datasets) > 1:
        return [D.ConcatDataset(datasets)]
    return datasets


def check_sampler_name(sampler_name):
    """ValueError for an unknown DATALOADER.SAMPLER."""
    if sampler_name not in TRAIN_SAMPLERS:
        raise ValueError(
            "Unknown DATALOADER.SAMPLER {!r}; valid values: {}".format(
                sampler_name, ", ".join(repr(s) for s in TRAIN_SAMPLERS)
            )
        )


def make_data_sampler(
    dataset,
    shuffle,
    distributed,
    sampler_name="",
    seed=0,
    repeat_threshold=0.001,
    num_old_classes=0,
    replay_quotas=None,
    replay_mode="balanced",
):
    """The sampler of dataset indices (of (index, active label) pairs for
    BalancedReplaySampler).

    Arguments:
        shuffle (bool): True in training.
        distributed (bool): shard over the torch.distributed processes.
        sampler_name (str): DATALOADER.SAMPLER (training only).
        seed (int): DATALOADER.SEED, for every shuffling sampler.
        repeat_threshold (float): DATALOADER.REPEAT_THRESHOLD (RepeatFactorSampler).
        num_old_classes (int), replay_quotas (dict old label -> quota), replay_mode (str):
            MODEL.LST.NUM_OLD_CLASSES, the replay plan's quotas and MODEL.LST.REPLAY
            (BalancedReplaySampler).
    """
    check_sampler_name(sampler_name)
    num_replicas, rank = (get_world_size(), get_rank()) if distributed else (1, 0)
    if sampler_name == "BalancedReplaySampler":
        return samplers.BalancedReplaySampler(
            dataset, num_old_classes, replay_quotas, replay_mode,
            num_replicas=num_replicas, rank=rank, seed=seed,
        )
    if sampler_name == "RepeatFactorSampler":
        return samplers.RepeatFactorSampler(
            dataset, repeat_threshold, num_replicas=num_replicas, rank=rank, seed=seed
        )
    if sampler_name == "ClassAwareSampler":
        return samplers.ClassAwareSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
    if distributed or shuffle:
        return samplers.DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
        )
    return torch.utils.data.sampler.SequentialSampler(dataset)


def _quantize(values, bins):
    """Bin index of every value: the number of (sorted) bin edges <= the value."""
    bins = sorted(bins)
    return [bisect.bisect_right(bins, v) for v in values]


def _compute_aspect_ratios(dataset):
    """height / width of every image, from the image records (no image is loaded)."""
    aspect_ratios = []
    for i in range(len(dataset)):
        img_info = dataset.get_img_info(i)
        aspect_ratios.append(float(img_info["height"]) / float(img_info["width"]))
    return aspect_ratios


def make_batch_data_sampler(
    dataset, sampler, aspect_grouping, images_per_batch, num_iters=None, start_iter=0
):
    """Batches of ``images_per_batch`` indices; with ``aspect_grouping`` (bin edges of h/w,
    e.g. [1]) a batch holds images of one bin only. With ``num_iters`` the batches repeat over
    epochs for num_iters iterations, starting at ``start_iter``."""
    if aspect_grouping:
        if not isinstance(aspect_grouping, (list, tuple)):
            aspect_grouping = [aspect_grouping]
        group_ids = _quantize(_compute_aspect_ratios(dataset), aspect_grouping)
        batch_sampler = samplers.GroupedBatchSampler(
            sampler, group_ids, images_per_batch, drop_uneven=False
        )
    else:
        batch_sampler = torch.utils.data.sampler.BatchSampler(
            sampler, images_per_batch, drop_last=False
        )
    if num_iters is not None:
        batch_sampler = samplers.IterationBasedBatchSampler(batch_sampler, num_iters, start_iter)
    return batch_sampler


def phase_category_ids(cfg):
    """The categories of MODEL.LST.PHASE (groups[0..PHASE] of MODEL.LST.PHASES_FILE, in label
    order), or None without a phases file. Checks MODEL.ROI_BOX_HEAD.NUM_CLASSES against them."""
    if not cfg.MODEL.LST.PHASES_FILE:
        return None
    phases = lst_phases.load_phases(cfg.MODEL.LST.PHASES_FILE)
    phase = cfg.MODEL.LST.PHASE
    category_ids = lst_phases.seen_category_ids(phases, phase)
    expected = lst_phases.num_classes(phases, phase)
    if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES != expected:
        raise ValueError(
            "MODEL.ROI_BOX_HEAD.NUM_CLASSES is {} but phase {} of {} has {} classes (background "
            "+ {} categories); set NUM_CLASSES to {}.".format(
                cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES, phase, cfg.MODEL.LST.PHASES_FILE, expected,
                expected - 1, expected,
            )
        )
    return category_ids


def _load_replay_plan(cfg):
    """Check the balanced-replay settings (one training dataset, MODEL.LST.REPLAY,
    NUM_OLD_CLASSES against the phases file) before the datasets are loaded; returns the
    replay plan dict for REPLAY "balanced", else None."""
    lst = cfg.MODEL.LST
    if len(cfg.DATASETS.TRAIN) != 1:
        raise ValueError(
            "BalancedReplaySampler trains on one dataset, but DATASETS.TRAIN names {}: merge "
            "them into one annotation file.".format(len(cfg.DATASETS.TRAIN))
        )
    if lst.REPLAY not in samplers.balanced_replay_sampler.REPLAY_MODES:
        raise ValueError(
            "Unknown MODEL.LST.REPLAY {!r}; valid values: {}".format(
                lst.REPLAY, ", ".join(samplers.balanced_replay_sampler.REPLAY_MODES)
            )
        )
    if lst.PHASES_FILE:
        phases = lst_phases.load_phases(lst.PHASES_FILE)
        expected = len(lst_phases.old_category_ids(phases, lst.PHASE))
        if lst.NUM_OLD_CLASSES != expected:
            raise ValueError(
                "MODEL.LST.NUM_OLD_CLASSES is {} but phase {} of {} has {} old classes; set it "
                "to {}.".format(lst.NUM_OLD_CLASSES, lst.PHASE, lst.PHASES_FILE, expected,
                                expected)
            )
    if lst.REPLAY != "balanced":
        return None
    return lst_phases.load_replay_plan(lst.REPLAY_PLAN_FILE)


def _replay_options(cfg, dataset, replay_plan):
    """make_data_sampler's BalancedReplaySampler arguments: the replay plan's quotas mapped to
    the dataset's training labels."""
    lst = cfg.MODEL.LST
    options = {"num_old_classes": lst.NUM_OLD_CLASSES, "replay_mode": lst.REPLAY}
    if replay_plan is not None:
        options["replay_quotas"] = lst_phases.replay_quotas_by_label(
            replay_plan, dataset.json_category_id_to_contiguous_id, lst.NUM_OLD_CLASSES,
            source=lst.REPLAY_PLAN_FILE,
        )
    return options


def _images_per_process(images_per_batch, key, num_processes):
    if images_per_batch <= 0 or images_per_batch % num_processes != 0:
        raise ValueError(
            "{} ({}) must be a positive multiple of the number of processes ({}); set it to "
            "images per process x {}.".format(key, images_per_batch, num_processes, num_processes)
        )
    return images_per_batch // num_processes


def make_data_loader(cfg, is_train=True, is_distributed=False, start_iter=0, is_for_period=False):
    """DataLoader(s) of (ImageList, tuple of BoxList targets, tuple of dataset indices).

    Returns one loader in training (and with ``is_for_period``, the periodic validation during
    training, whose dataset is filtered like a training set), else a list with one loader per
    DATASETS.TEST entry.
    """
    num_processes = get_world_size()
    if is_train:
        images_per_gpu = _images_per_process(
            cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH", num_processes
        )
        shuffle = True
        num_iters = cfg.SOLVER.MAX_ITER
        sampler_name = cfg.DATALOADER.SAMPLER
    else:
        images_per_gpu = _images_per_process(
            cfg.TEST.IMS_PER_BATCH, "TEST.IMS_PER_BATCH", num_processes
        )
        shuffle = is_distributed
        num_iters = None
        start_iter = 0
        sampler_name = ""
        if cfg.TEST.BBOX_AUG.ENABLED:
            raise NotImplementedError(
                "TEST.BBOX_AUG (test-time augmentation) is not built in this fork; set "
                "TEST.BBOX_AUG.ENABLED False."
            )
    # Configuration checks before the (slow) dataset loading.
    check_sampler_name(sampler_name)
    category_ids = phase_category_ids(cfg)
    replay = sampler_name == "BalancedReplaySampler"
    replay_plan = _load_replay_plan(cfg) if replay else None

    if images_per_gpu > 1:
        logging.getLogger(__name__).warning(
            "%d images per process: if you run out of memory, lower %s (and, for training, "
            "scale the learning rate and schedule by the linear scaling rule).",
            images_per_gpu, "SOLVER.IMS_PER_BATCH" if is_train else "TEST.IMS_PER_BATCH",
        )

    # Group landscape (h/w < 1) and portrait (h/w >= 1) images into separate batches.
    aspect_grouping = [1] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else []

    dataset_catalog = load_dataset_catalog(cfg)
    dataset_list = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    transforms = build_transforms(cfg, is_train)
    datasets = build_dataset(
        dataset_list, transforms, dataset_catalog, is_train or is_for_period,
        category_ids=category_ids,
    )
    if is_train:
        save_labels(datasets, cfg.OUTPUT_DIR)

    data_loaders = []
    for dataset in datasets:
        replay_options = _replay_options(cfg, dataset, replay_plan) if replay else {}
        sampler = make_data_sampler(
            dataset,
            shuffle,
            is_distributed,
            sampler_name,
            seed=cfg.DATALOADER.SEED,
            repeat_threshold=cfg.DATALOADER.REPEAT_THRESHOLD,
            **replay_options,
        )
        batch_sampler = make_batch_data_sampler(
            dataset, sampler, aspect_grouping, images_per_gpu, num_iters, start_iter
        )
        data_loaders.append(
            torch.utils.data.DataLoader(
                dataset,
                num_workers=cfg.DATALOADER.NUM_WORKERS,
                batch_sampler=batch_sampler,
                collate_fn=BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY),
            )
        )
    if is_train or is_for_period:
        return data_loaders[0]
    return data_loaders
