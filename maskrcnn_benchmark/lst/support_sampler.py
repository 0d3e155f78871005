"""Support images of LST's episodic training (meta weight generator, paper §3.4).

Every class of the phase (E = CLASSES_PER_EPISODE 0, the paper): episode i holds all N new
classes with one training image each, the n-th time a class comes up being episode n. The classes
(sorted) are split over the processes: process r takes positions r, r + R, r + 2R, ... of the
sorted labels (R processes), generates their rows, and the rows are gathered so that every
process's query sees all N (SupportEpisode.gathered).

A subset of E classes (E >= 1, this project's variant): episode i of process r draws E new
classes. They are taken round-robin from one seeded order of the new classes: the process's
episode slot is j = i * R + r and its classes are positions j * E, ..., j * E + E - 1 (mod N) of
that order, so with E <= N they are distinct, and over the processes and episodes every class
comes up equally often; each process's query sees its own E rows.

Either way, the n-th time class c comes up (over all processes), its image is position n of an
endless sequence of successive seeded permutations of c's images, so every image of c is used
once before any repeats (as the balanced replay's old classes), and its random training
transforms are drawn from a seed of its own (SupportEpisode.seeds), so that the image can be
loaded again identically and does not depend on how the classes are split. A draw depends on
(seed, i, r) alone, so resuming at any episode is exact.
"""
from collections import namedtuple

import numpy as np

from maskrcnn_benchmark.data.samplers.distributed import resolve_replicas
from maskrcnn_benchmark.data.samplers.repeat_factor_sampler import dataset_image_labels


def class_images(dataset, labels):
    """dict label -> sorted (n,) int64 array of the dataset indices of the images annotated with
    that label, for each of ``labels`` that has images (no image is loaded)."""
    wanted = set(labels)
    images = {}
    for index, image_labels in enumerate(dataset_image_labels(dataset)):
        for label in wanted.intersection(image_labels):
            images.setdefault(label, []).append(index)
    return {label: np.array(images[label], dtype=np.int64) for label in sorted(images)}


SupportEpisode = namedtuple("SupportEpisode", ["labels", "pairs", "seeds", "gathered"])
SupportEpisode.__doc__ = """One process's support set of an episode.

    labels (list[int]): the classes whose rows the query is scored with (all new classes of the
        phase, sorted, when ``gathered``; else the classes of ``pairs``).
    pairs (list[(int, int)]): this process's (class label, dataset index) support images.
    seeds (list[int]): the seed of each pair's random transforms (Python's ``random``).
    gathered (bool): the rows of ``pairs`` are this process's share of ``labels`` (positions
        rank, rank + R, ...) and must be gathered over the R processes.
"""


class SupportSampler:
    """Seeded, resumable (class label, dataset index) support pairs for the episodes.

    Arguments:
        class_to_images (dict[int, array-like]): new class label -> dataset indices of its
            images (see :func:`class_images`); every class needs at least one image.
        classes_per_episode (int): E, at most the number of classes; 0 = every class in every
            episode, split over the processes.
        num_replicas (int), rank (int): default from torch.distributed.
        seed (int): the samplers' seed (data.build.sampler_seed: DATALOADER.SEED, else SEED).

    Attributes:
        labels (list[int]): the classes, sorted.
        class_order (list[int]): the seeded round-robin order of the classes.
    """

    def __init__(self, class_to_images, classes_per_episode, num_replicas=None, rank=None, seed=0):
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        if not class_to_images:
            raise ValueError("SupportSampler needs at least one new class with training images")
        empty = sorted(label for label, images in class_to_images.items() if len(images) == 0)
        if empty:
            raise ValueError("SupportSampler: classes {} have no image; leave them out".format(empty))
        if not 0 <= classes_per_episode <= len(class_to_images):
            raise ValueError(
                "MODEL.FEW_SHOT.CLASSES_PER_EPISODE is {} but there are {} new classes with training "
                "images; set it to 0 (all of them) or between 1 and {}".format(
                    classes_per_episode, len(class_to_images), len(class_to_images))
            )
        if seed < 0:
            raise ValueError("SupportSampler: seed must be non-negative, got {}".format(seed))
        self.seed = seed
        self.classes_per_episode = classes_per_episode
        self.labels = sorted(class_to_images)
        self._images = {label: np.sort(np.asarray(class_to_images[label], dtype=np.int64))
                        for label in self.labels}
        order_generator = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
        self.class_order = [self.labels[k] for k in order_generator.permutation(len(self.labels))]

    def _image_permutation(self, label, cycle):
        """Permutation ``cycle`` of class ``label``'s images (an independent stream per pair)."""
        generator = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, label, cycle)))
        return generator.permutation(self._images[label])

    def image_of(self, label, occurrence):
        """The dataset index used the ``occurrence``-th time (0-based) class ``label`` comes up."""
        num_images = len(self._images[label])
        return int(self._image_permutation(label, occurrence // num_images)[occurrence % num_images])

    def transform_seed(self, label, occurrence):
        """The seed of the random transforms of class ``label``'s ``occurrence``-th support image."""
        sequence = np.random.SeedSequence(self.seed, spawn_key=(2, label, occurrence))
        return int(sequence.generate_state(1, dtype=np.uint32)[0])

    def episode(self, episode_index):
        """This process's SupportEpisode of episode ``episode_index`` (>= 0)."""
        if episode_index < 0:
            raise ValueError("episode index must be >= 0, got {}".format(episode_index))
        if self.classes_per_episode == 0:
            draws = [(label, episode_index) for label in self.labels[self.rank::self.num_replicas]]
        else:
            num_classes = len(self.class_order)
            slot = episode_index * self.num_replicas + self.rank
            positions = range(slot * self.classes_per_episode, (slot + 1) * self.classes_per_episode)
            draws = [(self.class_order[position % num_classes], position // num_classes) for position in positions]
        pairs = [(label, self.image_of(label, occurrence)) for label, occurrence in draws]
        seeds = [self.transform_seed(label, occurrence) for label, occurrence in draws]
        if self.classes_per_episode == 0:
            return SupportEpisode(list(self.labels), pairs, seeds, self.num_replicas > 1)
        return SupportEpisode([label for label, _ in pairs], pairs, seeds, False)

    def all_pairs(self, max_per_class=0):
        """Every class's (label, dataset index) pairs, classes sorted: all its images, or with
        ``max_per_class`` > 0 the first that many of its first permutation."""
        pairs = []
        for label in self.labels:
            images = self._image_permutation(label, 0)
            if max_per_class > 0:
                images = images[:max_per_class]
            pairs.extend((label, int(index)) for index in images)
        return pairs
