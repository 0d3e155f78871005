"""Samplers: upstream's GroupedBatchSampler and IterationBasedBatchSampler cases (same inputs
and expected batches as maskrcnn-benchmark's tests/test_data_samplers.py), DistributedSampler
against torch's, the LST baselines' samplers (RFS against the LVIS formula computed from the
JSON, CAS class uniformity), and resuming."""
import itertools
import math
import random
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from torch.utils.data.sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

from fixtures_data import write_lvis_fixture
from maskrcnn_benchmark.data.datasets import LVISDataset
from maskrcnn_benchmark.data.samplers import (
    ClassAwareSampler,
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
    RepeatFactorSampler,
)


class SubsetSampler(Sampler):
    def __init__(self, indices):
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


# ---------------------------------------------------------------------------------------------
# GroupedBatchSampler (upstream's cases)
# ---------------------------------------------------------------------------------------------

INTERLEAVED_GROUPS = [0, 0, 1, 0, 1, 1, 0, 1, 1, 0]


@pytest.mark.parametrize("batch_size", [1, 3, 5, 6])
def test_grouped_respects_order_of_contiguous_groups(batch_size):
    dataset = list(range(40))
    group_ids = [i // 10 for i in dataset]
    batches = list(GroupedBatchSampler(SequentialSampler(dataset), group_ids, batch_size, False))
    assert list(itertools.chain.from_iterable(batches)) == dataset


@pytest.mark.parametrize(
    "batch_size, expected",
    [
        (1, [[0], [1], [2], [3], [4], [5], [6], [7], [8], [9]]),
        (3, [[0, 1, 3], [2, 4, 5], [6, 9], [7, 8]]),
        (4, [[0, 1, 3, 6], [2, 4, 5, 7], [8], [9]]),
    ],
)
def test_grouped_respects_order_of_interleaved_groups(batch_size, expected):
    sampler = SequentialSampler(list(range(10)))
    assert list(GroupedBatchSampler(sampler, INTERLEAVED_GROUPS, batch_size, False)) == expected


def test_grouped_drop_uneven():
    sampler = SequentialSampler(list(range(10)))
    batches = list(GroupedBatchSampler(sampler, INTERLEAVED_GROUPS, 3, drop_uneven=True))
    assert batches == [[0, 1, 3], [2, 4, 5]]


def test_grouped_subset_sampler():
    sampler = SubsetSampler([0, 3, 5, 6, 7, 8])
    batches = list(GroupedBatchSampler(sampler, INTERLEAVED_GROUPS, 3, False))
    assert batches == [[0, 3, 6], [5, 7, 8]]


@pytest.mark.parametrize(
    "drop_uneven, expected", [(False, [[5, 8], [0, 6, 1], [3]]), (True, [[0, 6, 1]])]
)
def test_grouped_permuted_subset_sampler(drop_uneven, expected):
    sampler = SubsetSampler([5, 0, 6, 1, 3, 8])
    assert list(GroupedBatchSampler(sampler, INTERLEAVED_GROUPS, 3, drop_uneven)) == expected


def test_grouped_sampler_whose_epoch_has_no_image_of_a_group():
    """A sampler that draws from only one aspect-ratio group (LST's phases without replay: only
    the new classes' images) gives that group's batches, and no empty batch for the other."""
    sampler = SubsetSampler([2, 4, 5, 7])  # group 1 only
    assert list(GroupedBatchSampler(sampler, INTERLEAVED_GROUPS, 3, False)) == [[2, 4, 5], [7]]


def test_grouped_len_before_and_after_iterating():
    dataset = list(range(10))
    random.seed(0)
    group_ids = [random.randint(0, 1) for _ in dataset]
    sampler = RandomSampler(dataset)

    batch_sampler = GroupedBatchSampler(sampler, group_ids, 3, True)
    result = list(batch_sampler)
    assert len(result) == len(batch_sampler)
    assert len(result) == len(batch_sampler)

    batch_sampler = GroupedBatchSampler(sampler, group_ids, 3, True)
    batch_sampler_len = len(batch_sampler)
    result = list(batch_sampler)
    assert len(result) == batch_sampler_len
    assert len(result) == len(batch_sampler)


def test_grouped_counts_every_occurrence_of_a_repeated_index():
    """Repeat-factor and class-aware samplers repeat indices; each occurrence is a sample.
    Groups of indices 0..3: 0, 1, 0, 1; sampler positions 0..5 hold 3, 1, 3, 0, 2, 1."""
    sampler = SubsetSampler([3, 1, 3, 0, 2, 1])
    batches = list(GroupedBatchSampler(sampler, [0, 1, 0, 1], 2, False))
    assert batches == [[3, 1], [3, 1], [0, 2]]


def test_grouped_rejects_a_non_sampler():
    with pytest.raises(ValueError, match="torch.utils.data.Sampler"):
        GroupedBatchSampler(list(range(4)), [0, 0, 1, 1], 2)


# ---------------------------------------------------------------------------------------------
# IterationBasedBatchSampler
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [2, 3, 4])
@pytest.mark.parametrize("num_iterations", [4, 10, 20])
@pytest.mark.parametrize("drop_last", [False, True])
def test_iteration_based_cycles_the_batch_sampler(batch_size, num_iterations, drop_last):
    """Upstream's case: len is the iteration count and batches cycle through the passes."""
    dataset = list(range(10))
    batch_sampler = BatchSampler(SequentialSampler(dataset), batch_size, drop_last=drop_last)
    iter_sampler = IterationBasedBatchSampler(batch_sampler, num_iterations)
    assert len(iter_sampler) == num_iterations
    batches = list(iter_sampler)
    assert len(batches) == num_iterations
    for i, batch in enumerate(batches):
        start = (i % len(batch_sampler)) * batch_size
        assert batch == list(range(start, min(start + batch_size, len(dataset))))


class EpochRecordingSampler(SequentialSampler):
    def __init__(self, data):
        super().__init__(data)
        self.epochs = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def test_iteration_based_sets_the_pass_index_as_epoch():
    sampler = EpochRecordingSampler(list(range(5)))
    list(IterationBasedBatchSampler(BatchSampler(sampler, 2, False), 7))  # 3 batches per pass
    assert sampler.epochs == [0, 1, 2]


def _grouped_iteration_sampler(start_iter, num_replicas=1, rank=0):
    group_ids = [(i * 7) % 3 == 0 for i in range(23)]
    sampler = DistributedSampler(list(range(23)), num_replicas, rank, shuffle=True, seed=5)
    batch_sampler = GroupedBatchSampler(sampler, group_ids, 4, drop_uneven=False)
    return IterationBasedBatchSampler(batch_sampler, 40, start_iter)


@pytest.mark.parametrize("num_replicas, rank", [(1, 0), (2, 1)])
def test_iteration_based_resumes_exactly(num_replicas, rank):
    full = list(_grouped_iteration_sampler(0, num_replicas, rank))
    assert len(full) == 40
    for start_iter in [1, 5, 6, 7, 13, 39, 40]:
        resumed = list(_grouped_iteration_sampler(start_iter, num_replicas, rank))
        assert resumed == full[start_iter:]


def test_iteration_based_refuses_an_empty_pass():
    sampler = IterationBasedBatchSampler(BatchSampler(SequentialSampler([]), 2, False), 3)
    with pytest.raises(RuntimeError, match="no batch"):
        list(sampler)


# ---------------------------------------------------------------------------------------------
# DistributedSampler
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset_size, num_replicas", [(10, 3), (12, 4), (2, 5), (7, 1)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_distributed_matches_torch(dataset_size, num_replicas, shuffle):
    """Same padded epoch order as torch's DistributedSampler (seed + epoch), which deals it out
    round-robin where upstream (and we) give each process a contiguous chunk."""
    dataset = list(range(dataset_size))
    for seed, epoch in [(0, 0), (0, 3), (7, 2)]:
        ours, theirs = [], []
        for rank in range(num_replicas):
            sampler = DistributedSampler(dataset, num_replicas, rank, shuffle=shuffle, seed=seed)
            sampler.set_epoch(epoch)
            ours.append(list(sampler))
            assert len(ours[-1]) == len(sampler) == math.ceil(dataset_size / num_replicas)
            reference = torch.utils.data.DistributedSampler(
                dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
            )
            reference.set_epoch(epoch)
            theirs.append(list(reference))
        total = len(ours[0]) * num_replicas
        padded_ours = list(itertools.chain.from_iterable(ours))
        padded_theirs = [theirs[k % num_replicas][k // num_replicas] for k in range(total)]
        assert padded_ours == padded_theirs
        assert set(padded_ours) == set(dataset)


def test_distributed_epochs_differ():
    sampler = DistributedSampler(list(range(50)), 1, 0, shuffle=True, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_distributed_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank 2"):
        DistributedSampler(list(range(4)), num_replicas=2, rank=2)


# ---------------------------------------------------------------------------------------------
# RepeatFactorSampler and ClassAwareSampler on an LVIS-format fixture
# ---------------------------------------------------------------------------------------------

REPEAT_THRESHOLD = 0.3


@pytest.fixture(scope="module")
def lvis_fixture(tmp_path_factory):
    return write_lvis_fixture(str(tmp_path_factory.mktemp("lvis")), version="v1", num_images=40)


@pytest.fixture(scope="module")
def lvis_dataset(lvis_fixture):
    return LVISDataset(lvis_fixture.ann_file, lvis_fixture.root, True)


def _categories_per_image(data):
    """Sorted image ids and, per image, its category ids, from the JSON."""
    categories = defaultdict(set)
    for a in data["annotations"]:
        categories[a["image_id"]].add(a["category_id"])
    image_ids = sorted(image["id"] for image in data["images"])
    return image_ids, [categories[i] for i in image_ids]


def test_repeat_factors_follow_the_lvis_formula(lvis_fixture, lvis_dataset):
    image_ids, categories = _categories_per_image(lvis_fixture.data)
    assert lvis_dataset.ids == image_ids  # every fixture image has a valid annotation
    num_images = len(image_ids)
    image_frequency = Counter(c for cats in categories for c in cats)
    category_repeat = {
        c: max(1.0, math.sqrt(REPEAT_THRESHOLD / (n / num_images)))
        for c, n in image_frequency.items()
    }
    expected = [max(category_repeat[c] for c in cats) for cats in categories]

    sampler = RepeatFactorSampler(lvis_dataset, REPEAT_THRESHOLD, num_replicas=1, rank=0, seed=0)
    np.testing.assert_allclose(sampler.repeat_factors, expected, rtol=1e-12)
    assert any(r % 1 > 0 for r in expected) and max(expected) > 1.5  # the fixture exercises RFS


def test_repeat_factor_rounding_is_stochastic_and_unbiased(lvis_dataset):
    sampler = RepeatFactorSampler(lvis_dataset, REPEAT_THRESHOLD, num_replicas=1, rank=0, seed=3)
    factors = sampler.repeat_factors
    num_epochs = 400
    totals = np.zeros(len(factors))
    for epoch in range(num_epochs):
        counts = np.bincount(sampler.epoch_indices(epoch), minlength=len(factors))
        assert np.all((counts == np.floor(factors)) | (counts == np.ceil(factors)))
        totals += counts
    # Each count is floor(r) + Bernoulli(frac(r)): the mean's sd is at most 0.5 / sqrt(400).
    np.testing.assert_allclose(totals / num_epochs, factors, atol=4 * 0.5 / math.sqrt(num_epochs))


def test_repeat_factor_epochs_are_seeded(lvis_dataset):
    def epoch(seed, epoch):
        sampler = RepeatFactorSampler(
            lvis_dataset, REPEAT_THRESHOLD, num_replicas=1, rank=0, seed=seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch(0, 2) == epoch(0, 2)
    assert epoch(0, 2) != epoch(0, 3)
    assert epoch(0, 2) != epoch(1, 2)


@pytest.mark.parametrize("sampler_class", [RepeatFactorSampler, ClassAwareSampler])
def test_lst_samplers_give_each_process_a_disjoint_share(lvis_dataset, sampler_class):
    num_replicas = 3
    args = (REPEAT_THRESHOLD,) if sampler_class is RepeatFactorSampler else ()
    single = sampler_class(lvis_dataset, *args, num_replicas=1, rank=0, seed=4)
    for epoch in [0, 5]:
        single.set_epoch(epoch)
        whole = list(single)
        shards = []
        for rank in range(num_replicas):
            sampler = sampler_class(
                lvis_dataset, *args, num_replicas=num_replicas, rank=rank, seed=4
            )
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler)
        assert len({len(s) for s in shards}) == 1
        joined = list(itertools.chain.from_iterable(shards))
        # The processes split the same epoch: its positions, dealt out in contiguous chunks.
        assert joined[: len(whole)] == whole[: len(joined)]
        assert len(joined) - len(whole) in range(num_replicas)


def test_class_aware_draws_classes_uniformly(lvis_dataset):
    sampler = ClassAwareSampler(lvis_dataset, num_replicas=1, rank=0, seed=0)
    labels_of_image = [set(lvis_dataset.get_category_labels(i)) for i in range(len(lvis_dataset))]
    classes_present = sorted(set().union(*labels_of_image))
    assert list(sampler.class_to_images) == classes_present

    class_counts = Counter()
    image_counts = defaultdict(Counter)
    for epoch in range(50):
        classes, images = sampler.epoch_draws(epoch)
        assert len(images) == len(lvis_dataset)
        for c, i in zip(classes.tolist(), images.tolist()):
            assert c in labels_of_image[i]  # the drawn image contains the drawn class
            image_counts[c][i] += 1
        class_counts.update(classes.tolist())

    # Chi-square against uniform classes: critical value of chi2(df = C - 1) at p = 0.001 is
    # below 2 * df + 12 for the df here; round-robin visiting keeps the statistic near zero.
    total = sum(class_counts.values())
    expected = total / len(classes_present)
    statistic = sum((class_counts[c] - expected) ** 2 / expected for c in classes_present)
    assert statistic < 2 * (len(classes_present) - 1) + 12

    rarest = min(classes_present, key=lambda c: len(sampler.class_to_images[c]))
    image_share = len(sampler.class_to_images[rarest]) / len(lvis_dataset)
    assert class_counts[rarest] / total > 2 * image_share  # oversampled w.r.t. images

    # Within a class, its images are drawn uniformly.
    for c in classes_present:
        images_of_class = sampler.class_to_images[c]
        assert set(image_counts[c]) == set(images_of_class.tolist())
        draws = sum(image_counts[c].values())
        expected = draws / len(images_of_class)
        statistic = sum((image_counts[c][i] - expected) ** 2 / expected for i in images_of_class)
        assert statistic < 2 * (len(images_of_class) - 1) + 12


def test_class_aware_is_seeded(lvis_dataset):
    def epoch(seed, epoch):
        sampler = ClassAwareSampler(lvis_dataset, num_replicas=1, rank=0, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch(0, 1) == epoch(0, 1)
    assert epoch(0, 1) != epoch(0, 2)
    assert epoch(0, 1) != epoch(2, 1)


@pytest.mark.parametrize("sampler_class", [RepeatFactorSampler, ClassAwareSampler])
def test_lst_samplers_resume_exactly_with_grouping(lvis_dataset, sampler_class):
    args = (REPEAT_THRESHOLD,) if sampler_class is RepeatFactorSampler else ()
    group_ids = [
        int(info["height"] >= info["width"])
        for info in (lvis_dataset.get_img_info(i) for i in range(len(lvis_dataset)))
    ]

    def iteration_sampler(start_iter, rank):
        sampler = sampler_class(lvis_dataset, *args, num_replicas=2, rank=rank, seed=1)
        batch_sampler = GroupedBatchSampler(sampler, group_ids, 3)
        return IterationBasedBatchSampler(batch_sampler, 60, start_iter)

    for rank in range(2):
        full = list(iteration_sampler(0, rank))
        assert len(full) == 60
        for start_iter in [1, 9, 10, 11, 33, 59]:
            assert list(iteration_sampler(start_iter, rank)) == full[start_iter:]


def test_lst_samplers_need_category_labels():
    with pytest.raises(TypeError, match="get_category_labels"):
        RepeatFactorSampler(list(range(5)), 0.001, num_replicas=1, rank=0)
