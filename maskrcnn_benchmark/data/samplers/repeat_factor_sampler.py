"""Repeat-factor sampling (LVIS paper, Gupta et al. 2019, §4; the RFS baseline of LST Table 1).

For category c, f_c is the fraction of the dataset's images that contain c, and
r_c = max(1, sqrt(t / f_c)) for the threshold t. Image i is repeated r_i = max over its
categories of r_c times per epoch (1 for an image without annotations); the fractional part is
rounded stochastically each epoch.
"""
import math
from collections import Counter

import numpy as np
from torch.utils.data.sampler import Sampler

from .distributed import resolve_replicas, shard_indices


def dataset_image_labels(dataset):
    """Per dataset index, the training labels annotated in that image (no image is loaded)."""
    if not hasattr(dataset, "get_category_labels"):
        raise TypeError(
            "{} has no get_category_labels(index), which the repeat-factor and class-aware "
            "samplers need; COCODataset, LVISDataset and ConcatDataset provide it.".format(
                type(dataset).__name__
            )
        )
    return [dataset.get_category_labels(i) for i in range(len(dataset))]


def repeat_factors_from_category_frequency(image_labels, repeat_threshold):
    """(N,) float64 array of r_i for images whose labels are ``image_labels`` (list of lists).

    ``repeat_threshold`` is t: categories in fewer than a fraction t of the images are
    oversampled.
    """
    num_images = len(image_labels)
    images_per_category = Counter(c for labels in image_labels for c in set(labels))
    category_repeat = {
        c: max(1.0, math.sqrt(repeat_threshold / (count / num_images)))
        for c, count in images_per_category.items()
    }
    return np.array(
        [max((category_repeat[c] for c in labels), default=1.0) for labels in image_labels],
        dtype=np.float64,
    )


def epoch_generator(seed, epoch):
    """The numpy random generator of one epoch of a seeded sampler: an independent stream per
    (seed, epoch) pair."""
    if seed < 0 or epoch < 0:
        raise ValueError("seed and epoch must be non-negative, got {} and {}".format(seed, epoch))
    return np.random.default_rng([seed, epoch])


class RepeatFactorSampler(Sampler):
    """Yields this process's share of an epoch in which image i appears floor(r_i) or
    ceil(r_i) times (ceil with probability r_i - floor(r_i)), in random order.

    The epoch is drawn from (seed, epoch) alone, so it is reproducible and identical on every
    process; process r takes its contiguous chunk (see ``shard_indices``). Call ``set_epoch``
    before each pass; the epoch length varies from epoch to epoch.

    Arguments:
        dataset: has ``get_category_labels(index)``.
        repeat_threshold (float): t (DATALOADER.REPEAT_THRESHOLD).
        num_replicas (int), rank (int): default from torch.distributed.
        seed (int): the samplers' seed (data.build.sampler_seed: DATALOADER.SEED, else SEED).

    Attributes:
        repeat_factors (np.ndarray): (N,) r_i per dataset index.
    """

    def __init__(self, dataset, repeat_threshold, num_replicas=None, rank=None, seed=0):
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        self.seed = seed
        self.epoch = 0
        self.repeat_factors = repeat_factors_from_category_frequency(
            dataset_image_labels(dataset), repeat_threshold
        )
        self._cached_epoch = None

    def set_epoch(self, epoch):
        self.epoch = epoch

    def epoch_indices(self, epoch):
        """The whole epoch (all processes), a list of dataset indices."""
        if self._cached_epoch is None or self._cached_epoch[0] != epoch:
            rng = epoch_generator(self.seed, epoch)
            whole = np.floor(self.repeat_factors)
            repeats = whole + (rng.random(len(whole)) < self.repeat_factors - whole)
            indices = np.repeat(np.arange(len(whole)), repeats.astype(np.int64))
            self._cached_epoch = (epoch, rng.permutation(indices).tolist())
        return self._cached_epoch[1]

    def __iter__(self):
        return iter(shard_indices(self.epoch_indices(self.epoch), self.num_replicas, self.rank))

    def __len__(self):
        return int(math.ceil(len(self.epoch_indices(self.epoch)) / self.num_replicas))
