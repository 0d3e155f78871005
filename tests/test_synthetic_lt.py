"""The embedded long-tailed benchmark generator (maskrcnn_benchmark/data/datasets/synthetic_lt.py
and tools/make_synthetic_lvis.py).

The default dataset's plan (counts, layouts, LVIS fields; no pixels) is checked against the
issue's requirements; a small variant is written to disk and read back with the references
nobody here wrote: pycocotools (rasterisation, areas), lvis-api's LVIS, OpenCV's decoder.
"""
import collections
import filecmp
import json
import math
import os
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from lvis import LVIS

from maskrcnn_benchmark.config.paths_catalog import DatasetCatalog
from maskrcnn_benchmark.data.datasets.lvis import LVISDataset
from maskrcnn_benchmark.data.datasets.synthetic_lt import (
    COLOURS,
    SHAPES,
    TEXTURES,
    lvis_json,
    plan_dataset,
    write_dataset,
)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
import make_synthetic_lvis  # noqa: E402

SMALL = dict(num_categories=12, max_instances=40, min_val_instances=10)

# The LST paper's training instance-count bins, with the minimum population the issue asks for.
BINS = {"1": (1, 2), "2-4": (2, 5), "5-9": (5, 10), "10-99": (10, 100),
        "100-999": (100, 1000), ">=1000": (1000, math.inf)}


def instances_per_category(data):
    return collections.Counter(a["category_id"] for a in data["annotations"])


@pytest.fixture(scope="module")
def default_plan():
    return plan_dataset(seed=0)


@pytest.fixture(scope="module")
def default_json(default_plan):
    return {split: lvis_json(default_plan, split) for split in ("train", "val")}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """A small variant written twice with seed 5 and once with seed 6, in the catalog layout
    (DATA_DIR/synthetic_lt/...)."""
    roots = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        data_dir = tmp_path_factory.mktemp("data_" + name)
        write_dataset(plan_dataset(seed=seed, **SMALL), str(data_dir / "synthetic_lt"))
        roots[name] = data_dir
    return roots


def load(root, split):
    with open(os.path.join(root, "synthetic_lt", split + ".json")) as f:
        return json.load(f)


class TestDefaultDistribution:
    def test_every_bin_is_populated(self, default_json):
        counts = instances_per_category(default_json["train"])
        assert len(default_json["train"]["categories"]) >= 60
        assert set(counts) == {c["id"] for c in default_json["train"]["categories"]}
        for name, (low, high) in BINS.items():
            population = sum(low <= n < high for n in counts.values())
            assert population >= 3, "bin {} has {} categories".format(name, population)
        assert sum(n == 1 for n in counts.values()) >= 3

    def test_power_law_spans_three_orders_of_magnitude(self, default_json):
        counts = np.array(sorted(instances_per_category(default_json["train"]).values()))
        assert counts.max() / counts.min() > 1000
        # p(n) ~ 1/n: every full decade of count holds a similar number of categories.
        decades = np.bincount(np.floor(np.log10(counts)).astype(int))[:3]
        assert decades.min() >= 0.5 * decades.max()

    def test_sizes_stay_small(self, default_plan):
        assert 2000 <= len(default_plan.splits["train"]) <= 4000
        sizes = [(i.width, i.height) for s in default_plan.splits.values() for i in s]
        assert min(min(s) for s in sizes) >= 128 and max(max(s) for s in sizes) <= 192

    def test_several_objects_per_image(self, default_json):
        per_image = collections.Counter(a["image_id"] for a in default_json["train"]["annotations"])
        assert np.mean(list(per_image.values())) >= 3
        assert max(per_image.values()) >= 6

    def test_val_has_ten_instances_of_every_category(self, default_json):
        counts = instances_per_category(default_json["val"])
        assert {c["id"] for c in default_json["val"]["categories"]} == set(counts)
        assert min(counts.values()) >= 10

    def test_categories_are_attribute_compositions(self, default_json):
        categories = default_json["train"]["categories"]
        names = [c["name"] for c in categories]
        assert len(set(names)) == len(names)
        for c in categories:
            colour, texture, shape = c["name"].split("_")
            assert colour in COLOURS and texture in TEXTURES and shape in SHAPES
            assert c["name"] in c["synonyms"] and c["def"]
        # Every attribute value of any category is seen in some category with >= 100 instances.
        head = [c["name"].split("_") for c in categories if c["instance_count"] >= 100]
        for c in categories:
            for position, value in enumerate(c["name"].split("_")):
                assert any(h[position] == value for h in head), c["name"]

    def test_lvis_category_fields(self, default_json):
        train = default_json["train"]
        counts = instances_per_category(train)
        images_of = collections.defaultdict(set)
        for a in train["annotations"]:
            images_of[a["category_id"]].add(a["image_id"])
        for c in train["categories"]:
            n_images = len(images_of[c["id"]])
            assert c["instance_count"] == counts[c["id"]]
            assert c["image_count"] == n_images
            expected = "r" if n_images <= 10 else "c" if n_images <= 100 else "f"
            assert c["frequency"] == expected
        assert {c["frequency"] for c in train["categories"]} == {"r", "c", "f"}
        assert default_json["val"]["categories"] == train["categories"]

    def test_federated_image_fields(self, default_json):
        for data in default_json.values():
            present = collections.defaultdict(set)
            for a in data["annotations"]:
                present[a["image_id"]].add(a["category_id"])
            category_ids = {c["id"] for c in data["categories"]}
            flagged = 0
            for image in data["images"]:
                neg = set(image["neg_category_ids"])
                assert neg and neg <= category_ids and not neg & present[image["id"]]
                assert set(image["not_exhaustive_category_ids"]) <= present[image["id"]]
                flagged += bool(image["not_exhaustive_category_ids"])
            assert flagged > 0

    def test_ids_are_unique_across_splits(self, default_json):
        for key in ("images", "annotations"):
            ids = [r["id"] for d in default_json.values() for r in d[key]]
            assert len(ids) == len(set(ids))


class TestWrittenDataset:
    def test_catalog_layout(self, small_dataset):
        for split in ("train", "val"):
            attrs = DatasetCatalog.DATASETS["synthetic_lt_" + split]
            data_dir = str(small_dataset["a"])
            assert os.path.isfile(os.path.join(data_dir, attrs["ann_file"]))
            for image in load(data_dir, split)["images"]:
                assert os.path.isfile(os.path.join(data_dir, attrs["img_dir"], image["file_name"]))

    def test_lvis_api_loads_both_files(self, small_dataset):
        for split in ("train", "val"):
            api = LVIS(os.path.join(small_dataset["a"], "synthetic_lt", split + ".json"))
            assert len(api.get_img_ids()) > 0
            assert sorted(api.get_cat_ids()) == list(range(1, SMALL["num_categories"] + 1))

    def test_lvis_dataset_reads_images_and_targets(self, small_dataset):
        root = os.path.join(small_dataset["a"], "synthetic_lt")
        dataset = LVISDataset(
            os.path.join(root, "train.json"), os.path.join(root, "images", "train"), True
        )
        data = load(small_dataset["a"], "train")
        assert len(dataset) == len(data["images"])
        image, target, index = dataset[0]
        record = dataset.get_img_info(index)
        n_annotations = sum(a["image_id"] == record["id"] for a in data["annotations"])
        assert image.size == (record["width"], record["height"])
        assert len(target) == n_annotations

    def test_masks_boxes_and_areas_match_pycocotools(self, small_dataset):
        for split in ("train", "val"):
            data = load(small_dataset["a"], split)
            images = {i["id"]: i for i in data["images"]}
            for a in data["annotations"]:
                image = images[a["image_id"]]
                polygon = np.array(a["segmentation"][0]).reshape(-1, 2)
                x0, y0 = polygon.min(axis=0)
                x1, y1 = polygon.max(axis=0)
                np.testing.assert_allclose(a["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=0.011)
                assert x0 >= 0 and y0 >= 0 and x1 <= image["width"] and y1 <= image["height"]
                rles = mask_utils.frPyObjects(a["segmentation"], image["height"], image["width"])
                rle = mask_utils.merge(rles)
                assert a["area"] == pytest.approx(float(mask_utils.area(rle)))
                ys, xs = np.nonzero(mask_utils.decode(rle))
                bx, by, bw, bh = a["bbox"]
                # Every mask pixel [j, j + 1) meets the box.
                assert xs.min() + 1 > bx and xs.max() <= bx + bw
                assert ys.min() + 1 > by and ys.max() <= by + bh

    def test_masks_of_an_image_are_disjoint(self, small_dataset):
        data = load(small_dataset["a"], "train")
        images = {i["id"]: i for i in data["images"]}
        coverage = {}
        for a in data["annotations"]:
            image = images[a["image_id"]]
            rle = mask_utils.merge(
                mask_utils.frPyObjects(a["segmentation"], image["height"], image["width"])
            )
            mask = mask_utils.decode(rle).astype(np.int32)
            coverage[a["image_id"]] = coverage.get(a["image_id"], 0) + mask
        assert max(c.max() for c in coverage.values()) == 1

    def test_objects_are_drawn_on_their_masks(self, small_dataset):
        """Pixels of a solid object are its colour; the JPEG is decoded by OpenCV."""
        root = os.path.join(small_dataset["a"], "synthetic_lt")
        data = load(small_dataset["a"], "train")
        categories = {c["id"]: c["name"].split("_") for c in data["categories"]}
        images = {i["id"]: i for i in data["images"]}
        checked = 0
        for a in data["annotations"]:
            colour, texture, _ = categories[a["category_id"]]
            if texture != "solid" or a["area"] < 100:
                continue
            image = images[a["image_id"]]
            bgr = cv2.imread(os.path.join(root, "images", "train", image["file_name"]))
            assert bgr.shape[:2] == (image["height"], image["width"])
            rle = mask_utils.merge(
                mask_utils.frPyObjects(a["segmentation"], image["height"], image["width"])
            )
            inner = cv2.erode(mask_utils.decode(rle), np.ones((3, 3), np.uint8)).astype(bool)
            mean_rgb = bgr[inner][:, ::-1].mean(axis=0)
            direction = np.array(COLOURS[colour], dtype=np.float64)
            cosine = mean_rgb @ direction / (np.linalg.norm(mean_rgb) * np.linalg.norm(direction))
            assert cosine > 0.97, (colour, mean_rgb)
            checked += 1
        assert checked > 0

    def test_same_seed_same_bytes_other_seed_differs(self, small_dataset):
        a, b, c = (os.path.join(small_dataset[k], "synthetic_lt") for k in "abc")
        for split in ("train", "val"):
            assert filecmp.cmp(os.path.join(a, split + ".json"), os.path.join(b, split + ".json"),
                               shallow=False)
            names = sorted(os.listdir(os.path.join(a, "images", split)))
            assert names == sorted(os.listdir(os.path.join(b, "images", split)))
            _, mismatch, errors = filecmp.cmpfiles(
                os.path.join(a, "images", split), os.path.join(b, "images", split), names,
                shallow=False,
            )
            assert not mismatch and not errors
            assert load(small_dataset["a"], split) != load(small_dataset["c"], split)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="num_categories"):
        plan_dataset(num_categories=0)
    with pytest.raises(ValueError, match="image_size_range"):
        plan_dataset(image_size_range=(16, 16))


def test_cli_writes_and_refuses_to_overwrite(tmp_path):
    output = str(tmp_path / "synthetic_lt")
    args = ["--output", output, "--seed", "1", "--num-categories", "8", "--max-instances", "20"]
    make_synthetic_lvis.main(args)
    assert LVIS(os.path.join(output, "val.json")).get_img_ids()
    with pytest.raises(SystemExit, match="--force"):
        make_synthetic_lvis.main(args)
    make_synthetic_lvis.main(args + ["--force"])
    with open(os.path.join(output, "train.json")) as f:
        assert len(json.load(f)["categories"]) == 8
