"""Class-aware sampling (Shen et al., "Relay Backpropagation", 2016; the CAS baseline of LST
Table 1): every draw picks a class, then an image that contains it."""
import math

import numpy as np
from torch.utils.data.sampler import Sampler

from .distributed import resolve_replicas, shard_indices
from .repeat_factor_sampler import dataset_image_labels, epoch_generator


class ClassAwareSampler(Sampler):
    """Yields this process's share of an epoch of N draws (N = dataset length, rounded up to a
    multiple of the number of processes).

    As in the original CAS, classes are visited round-robin over a class list that is shuffled
    anew after every round, so each class is drawn equally often; each class's images are
    visited round-robin over a list shuffled anew whenever it is used up, so each image of the
    class is drawn equally often. Only classes with at least one image take part.

    An epoch depends on (seed, epoch) alone, so it is reproducible and identical on every
    process; process r takes its contiguous chunk. Call ``set_epoch`` before each pass.

    Arguments:
        dataset: has ``get_category_labels(index)``.
        num_replicas (int), rank (int): default from torch.distributed.
        seed (int): the samplers' seed (data.build.sampler_seed: DATALOADER.SEED, else SEED).

    Attributes:
        class_to_images (dict[int, np.ndarray]): label -> sorted indices of its images.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, seed=0):
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        self.seed = seed
        self.epoch = 0
        images_of_class = {}
        for index, labels in enumerate(dataset_image_labels(dataset)):
            for label in labels:
                images_of_class.setdefault(label, []).append(index)
        if not images_of_class:
            raise ValueError("ClassAwareSampler: the dataset has no annotated image")
        self.class_to_images = {
            label: np.array(images, dtype=np.int64)
            for label, images in sorted(images_of_class.items())
        }
        self.num_samples = int(math.ceil(len(dataset) / self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def epoch_draws(self, epoch):
        """(classes, images): two (total_size,) int64 arrays, the class and the image of every
        draw of the epoch (all processes)."""
        rng = epoch_generator(self.seed, epoch)
        labels = np.array(list(self.class_to_images), dtype=np.int64)
        rounds = int(math.ceil(self.total_size / len(labels)))
        classes = np.concatenate([rng.permutation(labels) for _ in range(rounds)])
        classes = classes[: self.total_size]

        images = np.empty_like(classes)
        for label, class_images in self.class_to_images.items():
            draws = np.flatnonzero(classes == label)
            if len(draws) == 0:
                continue
            cycles = int(math.ceil(len(draws) / len(class_images)))
            visits = np.concatenate([rng.permutation(class_images) for _ in range(cycles)])
            images[draws] = visits[: len(draws)]
        return classes, images

    def __iter__(self):
        _, images = self.epoch_draws(self.epoch)
        return iter(shard_indices(images.tolist(), self.num_replicas, self.rank))

    def __len__(self):
        return self.num_samples
