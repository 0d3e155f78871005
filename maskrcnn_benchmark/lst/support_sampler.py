"""Support images of LST's episodic training (meta weight generator, paper §3.4).

Episode i of process r draws E new classes and one training image of each. The classes are taken
round-robin from one seeded order of the new classes: the process's episode slot is
j = i * num_replicas + r and its classes are positions j * E, ..., j * E + E - 1 (mod the number of
classes N) of that order, so with E <= N they are distinct, and over the processes and episodes
every class comes up equally often. The n-th time class c comes up (over all processes), its image
is position n of an endless sequence of successive seeded permutations of c's images, so every
image of c is used once before any repeats (as the balanced replay's old classes). A draw depends
on (seed, i, r) alone, so resuming at any episode is exact.
"""
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


class SupportSampler:
    """Seeded, resumable (class label, dataset index) support pairs for the episodes.

    Arguments:
        class_to_images (dict[int, array-like]): new class label -> dataset indices of its
            images (see :func:`class_images`); every class needs at least one image.
        classes_per_episode (int): E, at most the number of classes.
        num_replicas (int), rank (int): default from torch.distributed.
        seed (int): DATALOADER.SEED.

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
        if not 1 <= classes_per_episode <= len(class_to_images):
            raise ValueError(
                "MODEL.FEW_SHOT.CLASSES_PER_EPISODE is {} but there are {} new classes with training "
                "images; set it between 1 and {}".format(
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

    def episode(self, episode_index):
        """This process's E (class label, dataset index) pairs of episode ``episode_index`` (>= 0)."""
        if episode_index < 0:
            raise ValueError("episode index must be >= 0, got {}".format(episode_index))
        num_classes = len(self.class_order)
        slot = episode_index * self.num_replicas + self.rank
        pairs = []
        for position in range(slot * self.classes_per_episode, (slot + 1) * self.classes_per_episode):
            label = self.class_order[position % num_classes]
            pairs.append((label, self.image_of(label, position // num_classes)))
        return pairs

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
