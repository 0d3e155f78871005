"""Data loaders from the config: datasets from the DatasetCatalog, samplers, batching.

Training: one loader over all DATASETS.TRAIN (concatenated), SOLVER.IMS_PER_BATCH / world size
images per process, SOLVER.MAX_ITER iterations, resumable at ``start_iter``. Test: one loader
per DATASETS.TEST entry, TEST.IMS_PER_BATCH / world size images per process, one pass.

Additions to upstream:
* DATALOADER.SAMPLER selects the training sampler by its name in ``TRAIN_SAMPLERS`` ("" =
  upstream's; "RepeatFactorSampler", "ClassAwareSampler"). A method package registers its own
  (maskrcnn_benchmark.lst registers "BalancedReplaySampler", whose batches hold (index, active
  label) pairs) and passes what it needs through ``sampler_options``.
* ``category_ids`` restricts LVIS-format datasets to a label space (e.g. an LST phase's seen
  categories), labelled in that order.
* Every training sampler is seeded by ``sampler_seed(cfg)`` (DATALOADER.SEED, or the run's SEED
  when it is -1), the default one included (a seeded permutation per epoch, where upstream used
  an unseeded RandomSampler on a single process), and resuming at ``start_iter`` yields exactly
  the index batches an uninterrupted run yields at those iterations (see
  IterationBasedBatchSampler). The workers' transforms draw from seeds that torch's DataLoader
  derives from the process's torch generator, itself seeded from SEED by the tools.
"""
import bisect
import logging

import torch
import torch.utils.data

from maskrcnn_benchmark.utils.comm import get_rank, get_world_size
from maskrcnn_benchmark.utils.miscellaneous import save_labels
from maskrcnn_benchmark.utils.registry import Registry
from maskrcnn_benchmark.utils.stop_request import leave_stop_signals_to_the_main_process

from . import datasets as D
from . import samplers
from .catalog import load_dataset_catalog
from .collate_batch import BatchCollator
from .samplers.repeat_factor_sampler import dataset_image_labels
from .transforms import build_transforms

# DATALOADER.SAMPLER values besides "" (upstream's random or distributed sampler): name ->
# builder(cfg, dataset, num_replicas, rank, **sampler_options) -> Sampler of training indices.
TRAIN_SAMPLERS = Registry("DATALOADER.SAMPLER")


def sampler_seed(cfg):
    """The seed of the samplers: DATALOADER.SEED, or SEED when it is -1. ValueError when both are -1
    (the tools draw SEED first, engine/cli.py's setup_seed; code building a loader itself sets one)."""
    seed = cfg.DATALOADER.SEED if cfg.DATALOADER.SEED >= 0 else cfg.SEED
    if seed < 0:
        raise ValueError(
            "SEED and DATALOADER.SEED are both -1, so the samplers have no seed: the tools draw SEED "
            "at start-up (engine/cli.py setup_seed); when building a data loader yourself, set SEED "
            "(or DATALOADER.SEED) to 0 or more, e.g. SEED 0")
    return seed


@TRAIN_SAMPLERS.register("RepeatFactorSampler")
def build_repeat_factor_sampler(cfg, dataset, num_replicas, rank):
    return samplers.RepeatFactorSampler(dataset, cfg.DATALOADER.REPEAT_THRESHOLD, num_replicas=num_replicas,
                                        rank=rank, seed=sampler_seed(cfg))


@TRAIN_SAMPLERS.register("ClassAwareSampler")
def build_class_aware_sampler(cfg, dataset, num_replicas, rank):
    return samplers.ClassAwareSampler(dataset, num_replicas=num_replicas, rank=rank, seed=sampler_seed(cfg))

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
                    "Dataset '{}' ({}) cannot be restricted to a subset of its categories (an LST "
                    "phase's, for instance); only LVIS-format datasets can ({}).".format(
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
    """ValueError for a DATALOADER.SAMPLER that is neither "" nor registered."""
    if sampler_name and sampler_name not in TRAIN_SAMPLERS:
        raise ValueError(
            "Unknown DATALOADER.SAMPLER {!r}; valid values: {}. A method's samplers are registered when "
            "its package is imported (import maskrcnn_benchmark.lst for \"BalancedReplaySampler\"; "
            "tools/train_net.py does).".format(
                sampler_name, ", ".join(repr(s) for s in ("", *sorted(TRAIN_SAMPLERS)))
            )
        )


def make_data_sampler(dataset, shuffle, distributed, seed=0):
    """Upstream's sampler of dataset indices: a seeded shuffle (or its shard of the processes'),
    else the sequence.

    Arguments:
        shuffle (bool): True in training.
        distributed (bool): shard over the torch.distributed processes.
        seed (int): the samplers' seed (sampler_seed).
    """
    if distributed or shuffle:
        num_replicas, rank = (get_world_size(), get_rank()) if distributed else (1, 0)
        return samplers.DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
        )
    return torch.utils.data.sampler.SequentialSampler(dataset)


def make_train_sampler(cfg, dataset, distributed, sampler_options=None):
    """The training sampler of DATALOADER.SAMPLER: upstream's for "", else the registered
    builder's, called with ``sampler_options`` as keyword arguments."""
    name = cfg.DATALOADER.SAMPLER
    check_sampler_name(name)
    if not name:
        return make_data_sampler(dataset, True, distributed, seed=sampler_seed(cfg))
    num_replicas, rank = (get_world_size(), get_rank()) if distributed else (1, 0)
    return TRAIN_SAMPLERS[name](cfg, dataset, num_replicas, rank, **(sampler_options or {}))


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


def check_num_classes(cfg, datasets, dataset_names):
    """ValueError unless MODEL.ROI_BOX_HEAD.NUM_CLASSES is 1 (background) + the number of
    training labels of every dataset with a label space (a smaller head fails at the first loss,
    a larger one predicts labels the evaluation cannot map back to categories). Called by the
    tools once the data loaders are built, before training or inference starts.

    Arguments:
        datasets (list): e.g. ``[loader.dataset for loader in loaders]`` (ConcatDatasets too).
        dataset_names (list[str]): their names, for the message.
    """
    if cfg.MODEL.RPN_ONLY:
        return
    for name, dataset in zip(dataset_names, datasets):
        parts = getattr(dataset, "datasets", [dataset])
        label_maps = [getattr(part, "contiguous_category_id_to_json_id", None) for part in parts]
        if any(label_map is None for label_map in label_maps):
            continue
        expected = 1 + max(len(label_map) for label_map in label_maps)
        if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES != expected:
            raise ValueError(
                "MODEL.ROI_BOX_HEAD.NUM_CLASSES is {} but dataset {!r} has {} categories; set "
                "MODEL.ROI_BOX_HEAD.NUM_CLASSES {} (the categories + 1 for the background) in the "
                "config or on the command line.".format(
                    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES, name, expected - 1, expected))


def class_image_counts(dataset, num_classes):
    """(num_classes,) float32 tensor: per training label, the number of images of ``dataset``
    annotated with it, from the annotations as the dataset loaded them (no image is read; entry 0,
    the background, is 0). Used by the federated loss (MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS).
    """
    counts = torch.zeros(num_classes)
    for labels in dataset_image_labels(dataset):
        labels = torch.as_tensor(sorted(set(labels)), dtype=torch.int64)
        if labels.numel() and int(labels.max()) >= num_classes:
            raise ValueError(
                "The training set has label {} but MODEL.ROI_BOX_HEAD.NUM_CLASSES is {}; set "
                "NUM_CLASSES to the categories + 1".format(int(labels.max()), num_classes))
        counts[labels] += 1
    return counts


def _images_per_process(images_per_batch, key, num_processes):
    if images_per_batch <= 0 or images_per_batch % num_processes != 0:
        raise ValueError(
            "{} ({}) must be a positive multiple of the number of processes ({}); set it to "
            "images per process x {}.".format(key, images_per_batch, num_processes, num_processes)
        )
    return images_per_batch // num_processes


def make_data_loader(cfg, is_train=True, is_distributed=False, start_iter=0, is_for_period=False,
                     category_ids=None, sampler_options=None):
    """DataLoader(s) of (ImageList, tuple of BoxList targets, tuple of dataset indices).

    Returns one loader in training (and with ``is_for_period``, the periodic validation during
    training, whose dataset is filtered like a training set), else a list with one loader per
    DATASETS.TEST entry. ``category_ids``: the label space of every dataset (see build_dataset);
    ``sampler_options``: keyword arguments of the registered training sampler's builder.
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
        if is_train:
            sampler = make_train_sampler(cfg, dataset, is_distributed, sampler_options)
        else:
            # The test order only shards the images over the processes: no seed is needed.
            sampler = make_data_sampler(dataset, shuffle, is_distributed)
        batch_sampler = make_batch_data_sampler(
            dataset, sampler, aspect_grouping, images_per_gpu, num_iters, start_iter
        )
        data_loaders.append(
            torch.utils.data.DataLoader(
                dataset,
                num_workers=cfg.DATALOADER.NUM_WORKERS,
                batch_sampler=batch_sampler,
                # Ctrl-C reaches the workers too; the trainer stops after a checkpoint, they with it
                worker_init_fn=leave_stop_signals_to_the_main_process if is_train else None,
                collate_fn=BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY),
            )
        )
    if is_train or is_for_period:
        return data_loaders[0]
    return data_loaders
