"""BalancedReplaySampler (instance-level balanced replay, LST paper §3.3): epoch composition
(one entry per (image, new class) with that class active, or with MODEL.LST.NEW_IMAGE_LABELS
"all" each new-class image once; quota_k replayed images of old class k), replay without
replacement across epochs, seeding, sharding over processes, exact resume, the (index, active
label) items through the datasets, aspect-ratio grouping, the data loader built from a config,
and the replay balance (instances trained per class and epoch) against a direct count through
the box head's RoI labelling."""
import json
import logging
import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data.sampler import BatchSampler, Sampler

from fixtures_data import write_lvis_fixture, write_paths_catalog
from maskrcnn_benchmark.config import cfg
from maskrcnn_benchmark.data import build, make_data_loader
from maskrcnn_benchmark.data.datasets import LVISDataset
from maskrcnn_benchmark.data.samplers import GroupedBatchSampler, IterationBasedBatchSampler
from maskrcnn_benchmark.lst.experiment import Experiment
from maskrcnn_benchmark.lst.phase import ResolvedPhase
from maskrcnn_benchmark.lst.replay_balance import replay_balance
from maskrcnn_benchmark.lst.replay_sampler import BalancedReplaySampler
from maskrcnn_benchmark.data.transforms import build_transforms
from maskrcnn_benchmark.modeling.roi_heads.box_head.loss import make_roi_box_loss_evaluator
from maskrcnn_benchmark.structures.bounding_box import BoxList

NUM_OLD = 4


class LabelledImages(object):
    """A dataset stand-in: image i has the training labels ``image_labels[i]``."""

    def __init__(self, image_labels):
        self.image_labels = image_labels

    def __len__(self):
        return len(self.image_labels)

    def get_category_labels(self, index):
        return sorted(set(self.image_labels[index]))


def random_images(seed=0, num_images=60):
    """Old labels 1..4 (label 3 in only three images, label 4 in none) and new labels 5, 6."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(num_images):
        labels = {int(c) for c in rng.choice([1, 2, 5, 6], rng.integers(1, 4))}
        if i % 20 == 7:
            labels.add(3)
        images.append(sorted(labels))
    return LabelledImages(images)


QUOTAS = {1: 7, 2: 2, 3: 5, 4: 3}  # class 3: more per epoch than it has images


@pytest.fixture
def dataset():
    return random_images()


def images_of(dataset, label):
    return [i for i in range(len(dataset)) if label in dataset.get_category_labels(i)]


def new_class_pairs(dataset):
    """Every (image, new class in it)."""
    return sorted((i, label) for i in range(len(dataset))
                  for label in dataset.get_category_labels(i) if label > NUM_OLD)


def test_epoch_holds_one_entry_per_image_and_new_class_and_the_quotas(dataset, caplog):
    with caplog.at_level(logging.WARNING):
        sampler = BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, seed=3)
    assert sampler.new_image_labels == "per_class" == cfg.MODEL.LST.NEW_IMAGE_LABELS
    assert "1 old classes have no training image" in caplog.text  # label 4
    pairs = new_class_pairs(dataset)
    assert len(pairs) > len({i for i, _ in pairs})  # some images hold both new classes
    for epoch in range(4):
        entries = sampler.epoch_entries(epoch)
        assert sorted(e for e in entries if e[1] > NUM_OLD) == pairs  # each pair exactly once
        assert Counter(label for _, label in entries if label <= NUM_OLD) == {1: 7, 2: 2, 3: 5}
        for index, label in entries:
            assert label in dataset.get_category_labels(index)
    assert len(sampler) == len(pairs) + 7 + 2 + 5


def test_new_image_labels_all_holds_new_images_once_and_the_quotas(dataset, caplog):
    with caplog.at_level(logging.WARNING):
        sampler = BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, new_image_labels="all", seed=3)
    assert "1 old classes have no training image" in caplog.text  # label 4
    new_images = [i for i in range(len(dataset))
                  if any(l > NUM_OLD for l in dataset.get_category_labels(i))]
    for epoch in range(4):
        entries = sampler.epoch_entries(epoch)
        assert sorted(i for i, label in entries if label == 0) == new_images
        assert Counter(label for _, label in entries if label) == {1: 7, 2: 2, 3: 5}
        for index, label in entries:
            assert label == 0 or label in dataset.get_category_labels(index)
    assert len(sampler) == len(new_images) + 7 + 2 + 5


def test_replay_covers_a_class_before_repeating(dataset):
    """After every epoch, each image of an old class has been replayed c or c + 1 times."""
    sampler = BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, seed=5)
    for label in (1, 2, 3):
        images = images_of(dataset, label)
        counts = Counter({i: 0 for i in images})
        for epoch in range(9):
            counts.update(i for i, k in sampler.epoch_entries(epoch) if k == label)
            assert set(counts) == set(images)
            assert sum(counts.values()) == QUOTAS[label] * (epoch + 1)
            assert max(counts.values()) - min(counts.values()) <= 1


def test_replayed_sequence_is_successive_permutations(dataset):
    sampler = BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, seed=7)
    for label in (1, 2, 3):
        images = sorted(images_of(dataset, label))
        sequence = np.concatenate([sampler.replayed_images(label, e) for e in range(12)])
        assert len(sequence) == 12 * QUOTAS[label]
        for start in range(0, len(sequence) - len(images) + 1, len(images)):
            assert sorted(sequence[start:start + len(images)].tolist()) == images
        assert sequence[: len(images)].tolist() != images  # shuffled (seeded)


def test_epochs_depend_on_seed_and_epoch_only(dataset):
    a = BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, seed=1)
    b = BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, seed=1)
    other_seed = BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, seed=2)
    history = [a.epoch_entries(e) for e in range(5)]
    assert b.epoch_entries(4) == history[4]  # no hidden state: epoch 4 computed first
    assert b.epoch_entries(2) == history[2]
    assert history[0] != history[1]
    assert other_seed.epoch_entries(0) != history[0]
    a.set_epoch(3)
    assert list(a) == history[3]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("new_image_labels", ["per_class", "all"])
def test_processes_partition_the_padded_epoch(dataset, world_size, new_image_labels):
    samplers = [BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, new_image_labels=new_image_labels,
                                      num_replicas=world_size, rank=r, seed=4) for r in range(world_size)]
    for epoch in (0, 1):
        entries = samplers[0].epoch_entries(epoch)
        padded_size = -(-len(entries) // world_size) * world_size
        padded = entries + entries[: padded_size - len(entries)]
        shards = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler) == padded_size // world_size
        assert [e for shard in shards for e in shard] == padded


@pytest.mark.parametrize("world_size, rank", [(1, 0), (2, 1), (3, 2)])
@pytest.mark.parametrize("grouping", [False, True])
@pytest.mark.parametrize("images_per_batch", [1, 2, 5])
def test_resume_yields_the_uninterrupted_batches(dataset, world_size, rank, grouping,
                                                 images_per_batch):
    num_iterations = 70

    def batches(start_iter):
        sampler = BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, num_replicas=world_size,
                                        rank=rank, seed=9)
        if grouping:
            batch_sampler = GroupedBatchSampler(sampler, [i % 2 for i in range(len(dataset))],
                                                images_per_batch)
        else:
            batch_sampler = BatchSampler(sampler, images_per_batch, drop_last=False)
        return list(IterationBasedBatchSampler(batch_sampler, num_iterations, start_iter))

    full = batches(0)
    assert len(full) == num_iterations
    assert all(isinstance(item, tuple) and len(item) == 2 for batch in full for item in batch)
    if grouping:
        assert all(len({i % 2 for i, _ in batch}) == 1 for batch in full)
    for start_iter in (1, 9, 23, 41, num_iterations - 1):
        assert batches(start_iter) == full[start_iter:]


@pytest.mark.parametrize("new_image_labels", ["per_class", "all"])
def test_replay_modes_all_and_none(dataset, new_image_labels):
    everything = BalancedReplaySampler(dataset, NUM_OLD, mode="all", new_image_labels=new_image_labels, seed=0)
    entries = everything.epoch_entries(0)
    assert sorted(entries) == [(i, 0) for i in range(len(dataset))]  # NEW_IMAGE_LABELS does not apply
    only_new = BalancedReplaySampler(dataset, NUM_OLD, mode="none", new_image_labels=new_image_labels, seed=0)
    if new_image_labels == "per_class":
        expected = new_class_pairs(dataset)
    else:
        expected = [(i, 0) for i in sorted({i for i, _ in new_class_pairs(dataset)})]
    assert sorted(only_new.epoch_entries(1)) == expected


def test_bad_arguments(dataset):
    with pytest.raises(ValueError, match="NUM_OLD_CLASSES is 0"):
        BalancedReplaySampler(dataset, 0, QUOTAS)
    with pytest.raises(ValueError, match="REPLAY_PLAN_FILE"):
        BalancedReplaySampler(dataset, NUM_OLD, None)
    with pytest.raises(ValueError, match="labels \\[5\\] that are not old classes"):
        BalancedReplaySampler(dataset, NUM_OLD, {5: 1})
    with pytest.raises(ValueError, match="No training image has a new class"):
        BalancedReplaySampler(dataset, 6, QUOTAS)
    with pytest.raises(ValueError, match="Unknown replay mode 'some'"):
        BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, mode="some")
    with pytest.raises(ValueError, match="Unknown MODEL.LST.NEW_IMAGE_LABELS 'each'; valid values: per_class, all"):
        BalancedReplaySampler(dataset, NUM_OLD, QUOTAS, new_image_labels="each")


def test_grouped_batches_of_pairs_follow_the_index_groups():
    class PairSampler(Sampler):
        def __init__(self, items):
            self.items = items

        def __iter__(self):
            return iter(self.items)

        def __len__(self):
            return len(self.items)

    items = [(0, 0), (3, 2), (1, 0), (2, 5), (4, 1), (3, 0)]
    groups = [0, 1, 0, 1, 0]
    batches = list(GroupedBatchSampler(PairSampler(items), groups, 2))
    assert batches == [[(0, 0), (2, 5)], [(3, 2), (1, 0)], [(4, 1)], [(3, 0)]]
    # The same batches as for the plain indices (upstream's grouping).
    plain = list(GroupedBatchSampler(PairSampler([i for i, _ in items]), groups, 2))
    assert [[i for i, _ in batch] for batch in batches] == plain


# ---------------------------------------------------------------------------- real datasets
@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("replay_data")
    fixture = write_lvis_fixture(str(directory), version="v1", num_images=24)
    catalog = write_paths_catalog(str(directory / "paths_catalog.py"),
                                  {"lvis_fixture": ("LVISDataset", fixture)})
    output_dir = str(directory / "experiment")
    phases, plans, _ = Experiment(output_dir).prepare(fixture.ann_file, 3, 2)
    return {"catalog": catalog, "fixture": fixture, "output_dir": output_dir, "phases": phases,
            "plan": plans[1]}


def test_dataset_item_with_active_label(experiment):
    fixture = experiment["fixture"]
    config = cfg.clone()
    config.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (48,), "INPUT.MAX_SIZE_TRAIN", 96,
                            "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", 1.0,
                            "INPUT.VERTICAL_FLIP_PROB_TRAIN", 1.0])
    transforms = build_transforms(config, is_train=True)  # resize, both flips, to tensor
    dataset = LVISDataset(fixture.ann_file, fixture.root, True, transforms)
    for index in range(6):
        label = dataset.get_category_labels(index)[0]
        image, target, returned = dataset[(index, label)]
        assert returned == index
        active = target.get_field("active_label")
        assert active.dtype == torch.int64
        assert active.tolist() == [label] * len(target) and len(target) > 0
        _, plain_target, _ = dataset[index]
        assert plain_target.get_field("active_label").tolist() == [0] * len(plain_target)
        assert plain_target.get_field("labels").tolist() == target.get_field("labels").tolist()


def replay_cfg(experiment, *opts):
    phases = experiment["phases"]
    config = cfg.clone()
    config.merge_from_list([
        "PATHS_CATALOG", experiment["catalog"], "OUTPUT_DIR", experiment["output_dir"],
        "DATASETS.TRAIN", ("lvis_fixture",), "DATASETS.TEST", ("lvis_fixture",),
        "DATALOADER.NUM_WORKERS", 0, "DATALOADER.SIZE_DIVISIBILITY", 32,
        "INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MAX_SIZE_TRAIN", 64,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 20,
        "DATALOADER.SAMPLER", "BalancedReplaySampler", "DATALOADER.SEED", 5,
        "MODEL.LST.PHASES_FILE", experiment["output_dir"] + "/phases.json",
        "MODEL.LST.PHASE", 1,
        "MODEL.LST.NUM_OLD_CLASSES", len(phases["groups"][0]),
        "MODEL.LST.REPLAY_PLAN_FILE", experiment["output_dir"] + "/phase_1/replay_plan.json",
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", ResolvedPhase.from_phases(phases, 1).num_classes,
    ] + list(opts))
    return config


def replay_loader(config, **kwargs):
    """The training loader of a phase config, as tools/train_net.py builds it."""
    return make_data_loader(config, is_train=True, **kwargs, **ResolvedPhase.from_config(config).data_loader_options(config))


@pytest.mark.parametrize("new_image_labels", ["per_class", "all"])
def test_training_loader_yields_active_labels(experiment, new_image_labels, caplog):
    with caplog.at_level(logging.INFO, logger="maskrcnn_benchmark.lst.replay_balance"):
        loader = replay_loader(replay_cfg(experiment, "MODEL.LST.NEW_IMAGE_LABELS", new_image_labels))
    sampler = loader.batch_sampler.batch_sampler.sampler
    assert isinstance(sampler, BalancedReplaySampler)
    assert sampler.new_image_labels == new_image_labels
    assert "NEW_IMAGE_LABELS {!r} (this run)".format(new_image_labels) in caplog.text
    to_label = loader.dataset.json_category_id_to_contiguous_id
    expected_quotas = {to_label[int(c)]: v["quota"]
                       for c, v in experiment["plan"]["old_classes"].items()}
    assert sampler.quotas == expected_quotas
    num_old = len(experiment["phases"]["groups"][0])
    seen_active = set()
    for images, targets, ids in loader:
        for target, index in zip(targets, ids):
            active = target.get_field("active_label")
            assert len(set(active.tolist())) == 1 and len(active) == len(target)
            label = active[0].item()
            seen_active.add(label)
            labels = target.get_field("labels").tolist()
            if label == 0:
                assert max(labels) > num_old
            else:
                assert label in labels
    assert any(0 < label <= num_old for label in seen_active)  # replayed entries
    if new_image_labels == "per_class":
        assert 0 not in seen_active and max(seen_active) > num_old
    else:
        assert 0 in seen_active and max(seen_active) <= num_old


def direct_count_per_epoch(sampler, dataset, evaluator):
    """{label: mean per epoch} of the ground-truth instances the box head labels positive, each
    box being its own proposal, over the entries of enough epochs that every replayed class runs
    through whole permutations of its images (so the mean is exact)."""
    num_epochs = math.lcm(*(len(images) // math.gcd(sampler.quotas[label], len(images))
                            for label, images in sampler.class_to_images.items()))
    assert num_epochs <= 1000
    positives_of_entry = {}
    counts = Counter()
    for epoch in range(num_epochs):
        for entry in sampler.epoch_entries(epoch):
            if entry not in positives_of_entry:
                _, target, _ = dataset[entry]
                proposal = BoxList(target.bbox.clone(), target.size)
                (labels,), _ = evaluator.prepare_targets([proposal], [target])
                positives_of_entry[entry] = Counter(labels[labels > 0].tolist())
            counts.update(positives_of_entry[entry])
    return {label: count / num_epochs for label, count in counts.items()}, num_epochs


@pytest.mark.parametrize("active_class_only", [True, False])
def test_replay_balance_equals_a_direct_count(experiment, active_class_only):
    written = {}
    for mode in ("per_class", "all"):
        config = replay_cfg(experiment, "MODEL.LST.NEW_IMAGE_LABELS", mode,
                            "MODEL.LST.ROI_ACTIVE_CLASS_ONLY", active_class_only)
        loader = replay_loader(config)
        sampler = loader.batch_sampler.batch_sampler.sampler
        with open(experiment["output_dir"] + "/replay_balance.json") as f:
            written[mode] = json.load(f)
        assert written[mode] == replay_balance(sampler, loader.dataset, active_class_only)
        direct, num_epochs = direct_count_per_epoch(sampler, loader.dataset, make_roi_box_loss_evaluator(config))
        assert num_epochs > 1
        trained = {c["label"]: c["trained_per_epoch"][mode] for c in written[mode]["classes"]}
        assert set(direct) <= set(trained)
        for label, count in trained.items():
            assert count == pytest.approx(direct.get(label, 0), abs=1e-3), label
        assert written[mode]["entries_per_epoch"][mode] == len(sampler.epoch_entries(0))
    assert written["per_class"]["new_image_labels"] == "per_class"
    assert {**written["per_class"], "new_image_labels": "all"} == written["all"]
    old = [c for c in written["per_class"]["classes"] if c["group"] == "old"]
    new = [c for c in written["per_class"]["classes"] if c["group"] == "new"]
    if active_class_only:
        for c in new:  # a new class is trained on all its instances, and only in its own entries
            assert c["trained_per_epoch"] == {"per_class": c["training_instances"], "all": c["training_instances"]}
        # Co-occurring old instances are trained only with "all".
        assert sum(c["trained_per_epoch"]["all"] for c in old) > sum(c["trained_per_epoch"]["per_class"] for c in old)


@pytest.mark.parametrize("opts, match", [
    (("MODEL.LST.NUM_OLD_CLASSES", 2), "NUM_OLD_CLASSES is 2 but phase 1 .* set MODEL.LST.NUM_OLD_CLASSES to 3"),
    (("MODEL.LST.REPLAY_PLAN_FILE", "missing.json"), "Replay plan 'missing.json' not found"),
    (("MODEL.LST.REPLAY", "some"), "Unknown MODEL.LST.REPLAY 'some'"),
    (("MODEL.LST.NEW_IMAGE_LABELS", "each"), "Unknown MODEL.LST.NEW_IMAGE_LABELS 'each'"),
    (("DATASETS.TRAIN", ("lvis_fixture", "lvis_fixture")), "trains on one dataset"),
])
def test_replay_configuration_errors(experiment, opts, match):
    with pytest.raises(ValueError, match=match):
        replay_loader(replay_cfg(experiment, *opts))


def test_replay_all_needs_no_plan(experiment, monkeypatch):
    monkeypatch.setattr(build, "get_world_size", lambda: 2)
    monkeypatch.setattr(build, "get_rank", lambda: 1)
    config = replay_cfg(experiment, "MODEL.LST.REPLAY", "all", "MODEL.LST.REPLAY_PLAN_FILE", "",
                        "SOLVER.IMS_PER_BATCH", 4)
    loader = replay_loader(config, is_distributed=True)
    sampler = loader.batch_sampler.batch_sampler.sampler
    assert (sampler.mode, sampler.num_replicas, sampler.rank, sampler.seed) == ("all", 2, 1, 5)
    assert sorted(sampler.epoch_entries(0)) == [(i, 0) for i in range(len(loader.dataset))]
