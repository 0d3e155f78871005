"""make_data_loader end to end on fixture datasets named by a fixture PATHS_CATALOG: batches,
test loaders, configuration errors, sampler selection, and resuming mid-epoch with every
sampler, on one process and on the shards of two (world size and rank patched in)."""
import itertools
import json
import os

import pytest
import torch

from fixtures_data import write_coco_fixture, write_lvis_fixture, write_paths_catalog
from maskrcnn_benchmark.config import cfg
from maskrcnn_benchmark.data import build, make_data_loader
from maskrcnn_benchmark.data.collate_batch import BatchCollator
from maskrcnn_benchmark.data.datasets import ConcatDataset
from maskrcnn_benchmark.data.samplers import (
    ClassAwareSampler,
    DistributedSampler,
    RepeatFactorSampler,
)
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import ImageList

MAX_ITER = 30


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data")
    coco = write_coco_fixture(str(directory))
    lvis = write_lvis_fixture(str(directory), version="v1", num_images=24)
    return write_paths_catalog(
        str(directory / "paths_catalog.py"),
        {"coco_fixture": ("COCODataset", coco), "lvis_fixture": ("LVISDataset", lvis)},
    )


def make_cfg(catalog, output_dir, *opts):
    config = cfg.clone()
    config.merge_from_list(
        [
            "PATHS_CATALOG", catalog,
            "OUTPUT_DIR", str(output_dir),
            "SEED", 0,
            "DATASETS.TRAIN", ("lvis_fixture",),
            "DATASETS.TEST", ("coco_fixture", "lvis_fixture"),
            "DATALOADER.NUM_WORKERS", 0,
            "DATALOADER.SIZE_DIVISIBILITY", 32,
            "INPUT.MIN_SIZE_TRAIN", (32,),
            "INPUT.MAX_SIZE_TRAIN", 64,
            "INPUT.MIN_SIZE_TEST", 32,
            "INPUT.MAX_SIZE_TEST", 64,
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.MAX_ITER", MAX_ITER,
            "TEST.IMS_PER_BATCH", 2,
        ]
        + list(opts)
    )
    return config


@pytest.fixture
def world(monkeypatch):
    """Pretend to be process ``rank`` of ``size`` (torch.distributed is not initialised)."""

    def set_world(size, rank):
        monkeypatch.setattr(build, "get_world_size", lambda: size)
        monkeypatch.setattr(build, "get_rank", lambda: rank)

    return set_world


def _orientation(dataset, index):
    info = dataset.get_img_info(index)
    return info["height"] / info["width"] >= 1


def test_training_batches(catalog, tmp_path):
    loader = make_data_loader(make_cfg(catalog, tmp_path), is_train=True)
    dataset = loader.dataset
    assert len(loader) == MAX_ITER
    num_batches = 0
    for images, targets, ids in itertools.islice(loader, 8):
        num_batches += 1
        assert isinstance(images, ImageList)
        assert isinstance(targets, tuple) and isinstance(ids, tuple)
        assert images.tensors.shape[0] == len(targets) == len(ids)
        assert len(ids) <= 2
        assert images.tensors.shape[2] % 32 == 0 and images.tensors.shape[3] % 32 == 0
        for (height, width), target, index in zip(images.image_sizes, targets, ids):
            assert isinstance(target, BoxList) and target.size == (width, height)
            assert min(height, width) == 32 or max(height, width) == 64
            assert len(target) > 0 and target.has_field("masks")
        # Aspect-ratio grouping: portrait and landscape images are never mixed.
        assert len({_orientation(dataset, i) for i in ids}) == 1
    assert num_batches == 8

    with open(os.path.join(str(tmp_path), "labels.json")) as f:
        labels = json.load(f)
    assert labels == {str(c): name for c, name in dataset.categories.items()}


def test_test_loaders_cover_each_dataset_once(catalog, tmp_path):
    config = make_cfg(catalog, tmp_path, "DATALOADER.ASPECT_RATIO_GROUPING", False)
    loaders = make_data_loader(config, is_train=False)
    assert isinstance(loaders, list) and len(loaders) == 2
    coco_loader, lvis_loader = loaders
    assert len(coco_loader.dataset) == 6  # images without annotations stay in a test set
    for loader in loaders:
        ids = [i for _, _, batch_ids in loader for i in batch_ids]
        assert ids == list(range(len(loader.dataset)))  # sequential, one pass
    assert not os.path.exists(os.path.join(str(tmp_path), "labels.json"))


def test_grouped_test_loader_visits_every_image_once(catalog, tmp_path):
    (coco_loader, _) = make_data_loader(make_cfg(catalog, tmp_path), is_train=False)
    ids = sorted(i for _, _, batch_ids in coco_loader for i in batch_ids)
    assert ids == list(range(len(coco_loader.dataset)))


def test_period_validation_loader_is_single_and_filtered(catalog, tmp_path):
    config = make_cfg(catalog, tmp_path, "DATASETS.TEST", ("coco_fixture",))
    loader = make_data_loader(config, is_train=False, is_for_period=True)
    assert len(loader.dataset) == 3  # filtered like a training set


def test_several_training_sets_are_concatenated(catalog, tmp_path):
    config = make_cfg(catalog, tmp_path, "DATASETS.TRAIN", ("coco_fixture", "lvis_fixture"))
    loader = make_data_loader(config, is_train=True)
    assert isinstance(loader.dataset, ConcatDataset)
    assert [len(d) for d in loader.dataset.datasets] == [3, 24]


@pytest.mark.parametrize(
    "is_train, key", [(True, "SOLVER.IMS_PER_BATCH"), (False, "TEST.IMS_PER_BATCH")]
)
def test_batch_size_must_divide_by_world_size(catalog, tmp_path, world, is_train, key):
    world(2, 0)
    config = make_cfg(catalog, tmp_path, key, 3)
    pattern = r"{} \(3\).*processes \(2\)".format(key.replace(".", r"\."))
    with pytest.raises(ValueError, match=pattern):
        make_data_loader(config, is_train=is_train, is_distributed=True)


def test_unknown_sampler_lists_the_valid_ones(catalog, tmp_path):
    import maskrcnn_benchmark.lst  # noqa: F401  (registers BalancedReplaySampler, as tools/train_net.py does)

    config = make_cfg(catalog, tmp_path, "DATALOADER.SAMPLER", "RandomSampler")
    with pytest.raises(ValueError, match="RandomSampler") as error:
        make_data_loader(config, is_train=True)
    for valid in ["''", "'RepeatFactorSampler'", "'ClassAwareSampler'", "'BalancedReplaySampler'"]:
        assert valid in str(error.value)


def test_balanced_replay_outside_an_lst_phase_names_the_keys(catalog, tmp_path):
    import maskrcnn_benchmark.lst  # noqa: F401  (registers the sampler)

    config = make_cfg(catalog, tmp_path, "DATALOADER.SAMPLER", "BalancedReplaySampler")
    with pytest.raises(ValueError, match="MODEL.LST.PHASES_FILE and MODEL.LST.PHASE"):
        make_data_loader(config, is_train=True)


@pytest.mark.parametrize(
    "sampler_name, sampler_class",
    [("", DistributedSampler), ("RepeatFactorSampler", RepeatFactorSampler),
     ("ClassAwareSampler", ClassAwareSampler)],
)
def test_sampler_selection(catalog, tmp_path, world, sampler_name, sampler_class):
    world(2, 1)
    config = make_cfg(
        catalog, tmp_path, "DATALOADER.SAMPLER", sampler_name, "SOLVER.IMS_PER_BATCH", 4,
        "DATALOADER.SEED", 11, "DATALOADER.REPEAT_THRESHOLD", 0.2,
    )
    loader = make_data_loader(config, is_train=True, is_distributed=True)
    sampler = loader.batch_sampler.batch_sampler.sampler
    assert isinstance(sampler, sampler_class)
    assert (sampler.num_replicas, sampler.rank, sampler.seed) == (2, 1, 11)
    assert loader.batch_sampler.batch_sampler.batch_size == 2
    if sampler_class is RepeatFactorSampler:
        assert sampler.repeat_factors.max() > 1  # threshold 0.2 taken from the config


def _index_batches(config, start_iter, is_distributed):
    return list(make_data_loader(config, True, is_distributed, start_iter).batch_sampler)


@pytest.mark.parametrize("sampler_name", ["", "RepeatFactorSampler", "ClassAwareSampler"])
@pytest.mark.parametrize("world_size, rank", [(1, 0), (2, 0), (2, 1)])
@pytest.mark.parametrize("grouping", [True, False])
def test_resume_gives_the_batches_of_an_uninterrupted_run(
    catalog, tmp_path, world, sampler_name, world_size, rank, grouping
):
    world(world_size, rank)
    config = make_cfg(
        catalog, tmp_path, "DATALOADER.SAMPLER", sampler_name, "DATALOADER.REPEAT_THRESHOLD", 0.3,
        "DATALOADER.ASPECT_RATIO_GROUPING", grouping, "SOLVER.IMS_PER_BATCH", 3 * world_size,
    )
    distributed = world_size > 1
    full = _index_batches(config, 0, distributed)
    assert len(full) == MAX_ITER
    assert _index_batches(config, 0, distributed) == full  # seeded: rebuilt, same batches
    # 24 images, 3 per process: passes end around iteration 4 or 8; resume inside and across.
    for start_iter in [1, 4, 5, 8, 9, 17, MAX_ITER - 1]:
        assert _index_batches(config, start_iter, distributed) == full[start_iter:]


@pytest.mark.parametrize("sampler_name", ["", "ClassAwareSampler"])
def test_resumed_loader_yields_the_same_samples(catalog, tmp_path, sampler_name):
    config = make_cfg(catalog, tmp_path, "DATALOADER.SAMPLER", sampler_name)
    full = _index_batches(config, 0, False)
    start_iter = 13
    loader = make_data_loader(config, is_train=True, start_iter=start_iter)
    for iteration, (images, targets, ids) in zip(range(start_iter, start_iter + 4), loader):
        assert list(ids) == full[iteration]
        for target, index in zip(targets, ids):
            labels = sorted(set(target.get_field("labels").tolist()))
            assert labels == loader.dataset.get_category_labels(index)


def test_default_training_sampler_is_seeded(catalog, tmp_path):
    seed_0 = _index_batches(make_cfg(catalog, tmp_path, "DATALOADER.SEED", 0), 0, False)
    seed_1 = _index_batches(make_cfg(catalog, tmp_path, "DATALOADER.SEED", 1), 0, False)
    assert seed_0 != seed_1


@pytest.mark.parametrize("sampler_name", ["", "RepeatFactorSampler", "ClassAwareSampler"])
def test_sampler_seed_is_the_run_seed_unless_dataloader_seed_is_set(catalog, tmp_path, sampler_name):
    def sampler(*opts):
        config = make_cfg(catalog, tmp_path, "DATALOADER.SAMPLER", sampler_name, *opts)
        return make_data_loader(config, is_train=True).batch_sampler.batch_sampler.sampler

    assert cfg.DATALOADER.SEED == -1 and cfg.SEED == -1
    assert sampler("SEED", 7).seed == 7  # DATALOADER.SEED -1: the run's SEED
    assert sampler("SEED", 7, "DATALOADER.SEED", 3).seed == 3
    assert _index_batches(make_cfg(catalog, tmp_path, "SEED", 1), 0, False) == _index_batches(
        make_cfg(catalog, tmp_path, "SEED", 5, "DATALOADER.SEED", 1), 0, False)
    with pytest.raises(ValueError, match="SEED and DATALOADER.SEED are both -1"):
        sampler("SEED", -1)


def test_distributed_shards_split_each_epoch(catalog, tmp_path, world):
    """Without grouping, the first pass of each process is its shard of epoch 0; together the
    two shards hold every image (24 images, 12 per process, 3 per batch: 4 batches a pass)."""
    shards = []
    for rank in range(2):
        world(2, rank)
        config = make_cfg(
            catalog, tmp_path, "DATALOADER.ASPECT_RATIO_GROUPING", False, "SOLVER.IMS_PER_BATCH", 6
        )
        batches = _index_batches(config, 0, True)
        shards.append([i for batch in batches[:4] for i in batch])
    assert sorted(shards[0] + shards[1]) == list(range(24))


def test_batch_collator_pads_to_the_size_divisibility():
    images = [torch.ones(3, 20, 30), torch.ones(3, 33, 17)]
    targets = [BoxList(torch.zeros(0, 4), (30, 20)), BoxList(torch.zeros(0, 4), (17, 33))]
    batch, batch_targets, ids = BatchCollator(16)(list(zip(images, targets, [4, 9])))
    assert batch.tensors.shape == (2, 3, 48, 32)
    assert batch.image_sizes == [(20, 30), (33, 17)]
    assert batch_targets == tuple(targets) and ids == (4, 9)
    assert batch.tensors[0, :, 20:].abs().sum() == 0 and batch.tensors[0, :, :20, :30].min() == 1
