"""Instance-level balanced replay (LST paper §3.3, Fig. 3 (c)): the epochs of phase t >= 1 are
D_t = R_t U G_t.

An epoch holds the new-class images G_t, as one entry per (image, new class c in it) with active
label c (MODEL.LST.NEW_IMAGE_LABELS "per_class", the paper's) or once per image with active label
0, no restriction ("all"), plus, for every old class k, quota_k images containing k, with active
label k. For an entry with active label k > 0 the RoI heads learn only class k (the model side
reads the target's "active_label" field). The replayed images of class k are drawn without
replacement across epochs: epoch e takes positions [e * q_k, (e + 1) * q_k) of an endless
sequence of successive seeded permutations of k's images, so every image of k is replayed once
before any repeats. lst.replay_balance counts the RoI-head positives per class such epochs give.
"""
import logging
import math

import numpy as np
from torch.utils.data.sampler import Sampler

from maskrcnn_benchmark.data.build import TRAIN_SAMPLERS, sampler_seed
from maskrcnn_benchmark.data.samplers.distributed import resolve_replicas, shard_indices
from maskrcnn_benchmark.data.samplers.repeat_factor_sampler import dataset_image_labels, epoch_generator

from .replay_balance import report_replay_balance

logger = logging.getLogger(__name__)

REPLAY_MODES = ("balanced", "all", "none")
NEW_IMAGE_LABELS = ("per_class", "all")


def check_new_image_labels(new_image_labels):
    """ValueError unless ``new_image_labels`` is one of NEW_IMAGE_LABELS."""
    if new_image_labels not in NEW_IMAGE_LABELS:
        raise ValueError("Unknown MODEL.LST.NEW_IMAGE_LABELS {!r}; valid values: {}".format(
            new_image_labels, ", ".join(NEW_IMAGE_LABELS)))


def new_image_entries(image_labels, num_old_classes, new_image_labels="per_class"):
    """The entries of the new-class images, sorted: (indices, active labels), two (N,) int64 arrays.

    Arguments:
        image_labels (list[list[int]]): per dataset index, its training labels.
        num_old_classes (int): labels above it are new.
        new_image_labels (str): "per_class": one entry (i, c) per image i and new class c in
            it; "all": one entry (i, 0) per image with a new class.
    """
    check_new_image_labels(new_image_labels)
    pairs = []
    for index, labels in enumerate(image_labels):
        new = sorted(label for label in set(labels) if label > num_old_classes)
        if not new:
            continue
        if new_image_labels == "all":
            pairs.append((index, 0))
        else:
            pairs.extend((index, label) for label in new)
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def replay_cycle_generator(seed, label, cycle):
    """The numpy generator of permutation ``cycle`` of old class ``label``'s images; a stream
    independent of the epoch generators (its own spawn key)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(label, cycle)))


class BalancedReplaySampler(Sampler):
    """Yields this process's share of an epoch of (dataset index, active label) pairs.

    The epoch's entries are shuffled with a generator seeded from (seed, epoch), padded to a
    multiple of the number of processes with its own beginning, and process r takes its
    contiguous chunk. An epoch depends on (seed, epoch) alone, so resuming is exact; call
    ``set_epoch`` before each pass (IterationBasedBatchSampler does).

    Arguments:
        dataset: has ``get_category_labels(index)`` (training labels 1..C of image ``index``).
        num_old_classes (int): labels 1..num_old_classes are old classes, the others new.
        quotas (dict[int, int]): old label -> images replayed per epoch ("balanced" only).
            An old class without images in the dataset is skipped with a warning.
        mode (str): MODEL.LST.REPLAY: "balanced"; "all": every image of the dataset once per
            epoch, active label 0; "none": only the new-class entries.
        new_image_labels (str): MODEL.LST.NEW_IMAGE_LABELS, the new-class entries of
            "balanced" and "none" (see new_image_entries): "per_class" or "all".
        num_replicas (int), rank (int): default from torch.distributed.
        seed (int): the samplers' seed (data.build.sampler_seed: DATALOADER.SEED, else SEED).

    Attributes:
        image_labels (list[list[int]]): per dataset index, its training labels.
        new_images (np.ndarray): sorted indices of the images with a new-class annotation.
        class_to_images (dict[int, np.ndarray]): old label -> sorted indices of its images, for
            the replayed classes.
        quotas (dict[int, int]): old label -> quota, for the replayed classes.
    """

    new_image_label_modes = NEW_IMAGE_LABELS

    def __init__(self, dataset, num_old_classes, quotas=None, mode="balanced",
                 new_image_labels="per_class", num_replicas=None, rank=None, seed=0):
        if mode not in REPLAY_MODES:
            raise ValueError("Unknown replay mode {!r} (MODEL.LST.REPLAY); valid: {}".format(
                mode, ", ".join(REPLAY_MODES)))
        check_new_image_labels(new_image_labels)
        if num_old_classes < 1:
            raise ValueError(
                "BalancedReplaySampler needs old classes: MODEL.LST.NUM_OLD_CLASSES is {}; set "
                "it to the previous phase's number of foreground classes (phase t >= 1).".format(
                    num_old_classes))
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        self.seed = seed
        self.epoch = 0
        self.mode = mode
        self.new_image_labels = new_image_labels
        self.num_old_classes = num_old_classes
        self.image_labels = image_labels = dataset_image_labels(dataset)
        self.num_images = len(image_labels)
        self.new_images = np.array(
            [i for i, labels in enumerate(image_labels) if any(l > num_old_classes for l in labels)],
            dtype=np.int64,
        )
        if len(self.new_images) == 0:
            raise ValueError(
                "No training image has a new class (label > MODEL.LST.NUM_OLD_CLASSES = {}); "
                "check NUM_OLD_CLASSES and MODEL.LST.PHASE.".format(num_old_classes))
        self.class_to_images, self.quotas = {}, {}
        if mode == "balanced":
            self._set_replayed_classes(image_labels, num_old_classes, quotas)
        self._fixed_entries = self.fixed_entries()
        self._cached_epoch = None

    def _set_replayed_classes(self, image_labels, num_old_classes, quotas):
        if quotas is None:
            raise ValueError("Balanced replay needs the per-class quotas: set "
                             "MODEL.LST.REPLAY_PLAN_FILE to the phase's replay_plan.json.")
        bad = [label for label in quotas if not 1 <= label <= num_old_classes]
        if bad:
            raise ValueError("Replay quotas given for labels {} that are not old classes "
                             "1..{}".format(sorted(bad)[:10], num_old_classes))
        images_of_class = {}
        for index, labels in enumerate(image_labels):
            for label in labels:
                if label in quotas:
                    images_of_class.setdefault(label, []).append(index)
        without_images = sorted(label for label in quotas if label not in images_of_class)
        if without_images:
            logger.warning("Balanced replay: %d old classes have no training image and are "
                           "not replayed (labels %s)", len(without_images), without_images[:20])
        for label in sorted(images_of_class):
            if quotas[label] > 0:
                self.class_to_images[label] = np.array(images_of_class[label], dtype=np.int64)
                self.quotas[label] = int(quotas[label])

    def set_epoch(self, epoch):
        self.epoch = epoch

    def fixed_entries(self, new_image_labels=None):
        """(indices, active labels), two (N,) int64 arrays: the entries of every epoch, before
        the replayed ones and the shuffle. Mode "all": every image with active label 0; else the
        new-class entries, labelled as ``new_image_labels`` says (default: the sampler's own)."""
        if self.mode == "all":
            return np.arange(self.num_images, dtype=np.int64), np.zeros(self.num_images, dtype=np.int64)
        return new_image_entries(self.image_labels, self.num_old_classes,
                                 new_image_labels or self.new_image_labels)

    def replayed_images(self, label, epoch):
        """(quota,) int64: the images of old class ``label`` replayed in ``epoch``."""
        images = self.class_to_images[label]
        quota = self.quotas[label]
        first, last = epoch * quota, (epoch + 1) * quota
        cycles = range(first // len(images), (last - 1) // len(images) + 1)
        sequence = np.concatenate([
            replay_cycle_generator(self.seed, label, cycle).permutation(images)
            for cycle in cycles
        ])
        offset = cycles[0] * len(images)
        return sequence[first - offset:last - offset]

    def epoch_entries(self, epoch):
        """The whole epoch (all processes, before padding): a list of (dataset index, active
        label) pairs in the epoch's order."""
        if self._cached_epoch is not None and self._cached_epoch[0] == epoch:
            return self._cached_epoch[1]
        indices, labels = [self._fixed_entries[0]], [self._fixed_entries[1]]
        for label in self.class_to_images:
            indices.append(self.replayed_images(label, epoch))
            labels.append(np.full(self.quotas[label], label, dtype=np.int64))
        indices, labels = np.concatenate(indices), np.concatenate(labels)
        order = epoch_generator(self.seed, epoch).permutation(len(indices))
        entries = list(zip(indices[order].tolist(), labels[order].tolist()))
        self._cached_epoch = (epoch, entries)
        return entries

    def __iter__(self):
        return iter(shard_indices(self.epoch_entries(self.epoch), self.num_replicas, self.rank))

    def __len__(self):
        return int(math.ceil(len(self.epoch_entries(self.epoch)) / self.num_replicas))


@TRAIN_SAMPLERS.register("BalancedReplaySampler")
def build_balanced_replay_sampler(cfg, dataset, num_replicas, rank, phase=None):
    """DATALOADER.SAMPLER "BalancedReplaySampler" for the LST phase ``phase`` (a ResolvedPhase):
    MODEL.LST.REPLAY mode, with the quotas of MODEL.LST.REPLAY_PLAN_FILE for "balanced", and the
    new-class entries of MODEL.LST.NEW_IMAGE_LABELS. Logs the balance of its epochs and writes it
    to OUTPUT_DIR/replay_balance.json (lst.replay_balance)."""
    lst = cfg.MODEL.LST
    if phase is None:
        raise ValueError(
            "DATALOADER.SAMPLER 'BalancedReplaySampler' replays the old classes of an LST phase: set "
            "MODEL.LST.PHASES_FILE and MODEL.LST.PHASE (tools/lst_phase_config.py writes such a config)"
        )
    if len(cfg.DATASETS.TRAIN) != 1:
        raise ValueError(
            "BalancedReplaySampler trains on one dataset, but DATASETS.TRAIN names {}: merge "
            "them into one annotation file.".format(len(cfg.DATASETS.TRAIN))
        )
    if lst.REPLAY not in REPLAY_MODES:
        raise ValueError("Unknown MODEL.LST.REPLAY {!r}; valid values: {}".format(
            lst.REPLAY, ", ".join(REPLAY_MODES)))
    check_new_image_labels(lst.NEW_IMAGE_LABELS)
    quotas = None
    if lst.REPLAY == "balanced":
        quotas = phase.replay_quotas(lst.REPLAY_PLAN_FILE, dataset.json_category_id_to_contiguous_id,
                                     lst.REPLAY_QUOTA_RULE)
    sampler = BalancedReplaySampler(dataset, phase.num_old_classes, quotas, lst.REPLAY, lst.NEW_IMAGE_LABELS,
                                    num_replicas=num_replicas, rank=rank, seed=sampler_seed(cfg))
    report_replay_balance(sampler, dataset, lst.ROI_ACTIVE_CLASS_ONLY, cfg.OUTPUT_DIR)
    return sampler
