"""COCODataset, LVISDataset and ConcatDataset on fixtures written by tests/fixtures_data.py.

Expectations are derived from the written JSON with pycocotools / the lvis package and the
documented rules (non-crowd annotations, boxes with w, h > 0, polygons of >= 3 points,
xywh -> inclusive xyxy), never from the dataset code.
"""
import copy
import logging
import os

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from lvis import LVIS
from PIL import Image
from pycocotools.coco import COCO

from fixtures_data import (
    lvis_image_path,
    write_coco_fixture,
    write_json,
    write_lvis_fixture,
)
from maskrcnn_benchmark.data.datasets import COCODataset, ConcatDataset, LVISDataset

DATASET_LOGGER = "maskrcnn_benchmark.data.datasets.coco"


@pytest.fixture(scope="module", params=["v0.5", "v1"])
def lvis_fixture(request, tmp_path_factory):
    return write_lvis_fixture(str(tmp_path_factory.mktemp("lvis")), version=request.param)


def _valid_polygons(annotation):
    return [p for p in annotation["segmentation"] if len(p) >= 6 and len(p) % 2 == 0]


def _usable_annotations(annotations):
    """The annotations a dataset must keep: not crowd, positive box size, a valid polygon."""
    return [
        a
        for a in annotations
        if not a.get("iscrowd", 0)
        and a["bbox"][2] > 0
        and a["bbox"][3] > 0
        and _valid_polygons(a)
    ]


def _expected_boxes(annotations, width, height):
    """Inclusive xyxy boxes clipped to the image, without the empty ones, and the kept
    annotations (in order)."""
    kept, boxes = [], []
    for a in annotations:
        x, y, w, h = a["bbox"]
        x1, y1 = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
        x2, y2 = min(max(x + w - 1, 0), width - 1), min(max(y + h - 1, 0), height - 1)
        if x2 > x1 and y2 > y1:
            kept.append(a)
            boxes.append([x1, y1, x2, y2])
    return kept, boxes


def assert_boxes_equal(bbox, expected_boxes):
    expected = torch.tensor(expected_boxes, dtype=torch.float32).reshape(-1, 4)
    torch.testing.assert_close(bbox, expected)


def _is_valid_training_image(annotations):
    return any(a["bbox"][2] > 1 and a["bbox"][3] > 1 for a in _usable_annotations(annotations))


def _decoded_masks(polygons_per_instance, height, width):
    """pycocotools rasterisation of each instance's polygons, (N, H, W) uint8."""
    rles = [
        mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        for polygons in polygons_per_instance
    ]
    masks = [mask_utils.decode([rle])[..., 0] for rle in rles]
    return np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)


# ---------------------------------------------------------------------------------------------
# COCODataset
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_coco_records_match_pycocotools(coco_fixture, training):
    coco = COCO(coco_fixture.ann_file)
    dataset = COCODataset(coco_fixture.ann_file, coco_fixture.root, training)

    expected_ids = sorted(coco.getImgIds())
    if training:
        expected_ids = [
            i for i in expected_ids if _is_valid_training_image(coco.loadAnns(coco.getAnnIds(i)))
        ]
    assert dataset.ids == expected_ids
    assert len(dataset) == len(expected_ids)

    json_order = [c["id"] for c in coco_fixture.data["categories"]]
    assert dataset.json_category_id_to_contiguous_id == {c: i + 1 for i, c in enumerate(json_order)}
    assert dataset.contiguous_category_id_to_json_id == {i + 1: c for i, c in enumerate(json_order)}
    assert dataset.categories == {c: coco.cats[c]["name"] for c in json_order}

    for index, image_id in enumerate(expected_ids):
        record = coco.imgs[image_id]
        assert dataset.get_img_info(index) == record
        image, target, returned_index = dataset[index]
        assert returned_index == index
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert image.size == (record["width"], record["height"])
        assert target.size == image.size and target.mode == "xyxy"

        annotations = _usable_annotations(coco.loadAnns(coco.getAnnIds(image_id)))
        kept, boxes = _expected_boxes(annotations, record["width"], record["height"])
        assert_boxes_equal(target.bbox, boxes)
        labels = [json_order.index(a["category_id"]) + 1 for a in kept]
        assert target.get_field("labels").tolist() == labels
        assert target.get_field("labels").dtype == torch.int64

        masks = target.get_field("masks")
        assert len(masks) == len(kept)
        expected_masks = _decoded_masks(
            [_valid_polygons(a) for a in kept], record["height"], record["width"]
        )
        rasterised = masks.convert("mask").instances.masks.numpy()
        np.testing.assert_array_equal(rasterised, expected_masks)


def test_coco_skips_are_counted_and_logged_once(coco_fixture, caplog):
    with caplog.at_level(logging.INFO, logger=DATASET_LOGGER):
        dataset = COCODataset(coco_fixture.ann_file, coco_fixture.root, True)
    annotations = coco_fixture.data["annotations"]
    non_crowd = [a for a in annotations if not a["iscrowd"]]
    empty_boxes = sum(a["bbox"][2] <= 0 or a["bbox"][3] <= 0 for a in non_crowd)
    sized = [a for a in non_crowd if a["bbox"][2] > 0 and a["bbox"][3] > 0]
    bad_polygons = sum(len(a["segmentation"]) - len(_valid_polygons(a)) for a in sized)
    without_polygon = sum(not _valid_polygons(a) for a in sized)
    dropped_images = len(coco_fixture.data["images"]) - len(dataset)
    assert (empty_boxes, bad_polygons, without_polygon, dropped_images) == (1, 3, 1, 3)
    assert dataset.load_stats["empty_box"] == empty_boxes
    assert dataset.load_stats["bad_polygon"] == bad_polygons
    assert dataset.load_stats["no_polygon"] == without_polygon
    assert dataset.load_stats["image_without_annotations"] == dropped_images

    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name == DATASET_LOGGER
    ]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert coco_fixture.ann_file in message
    for phrase in [
        "{} annotations with a zero or negative box".format(empty_boxes),
        "{} polygons with fewer than 3 points or an odd number".format(bad_polygons),
        "{} annotations left with no valid polygon".format(without_polygon),
        "{} training images without a valid annotation".format(dropped_images),
    ]:
        assert phrase in message


def test_coco_test_split_keeps_images_without_annotations(coco_fixture):
    dataset = COCODataset(coco_fixture.ann_file, coco_fixture.root, False)
    index = dataset.ids.index(7)  # the image without any annotation
    _, target, _ = dataset[index]
    assert len(target) == 0
    assert len(target.get_field("labels")) == 0 and len(target.get_field("masks")) == 0
    assert dataset.load_stats["image_without_annotations"] == 0


def test_coco_negative_box_size_is_skipped(coco_fixture, tmp_path):
    data = copy.deepcopy(coco_fixture.data)
    data["annotations"][3]["bbox"] = [5, 10, 20, -30]  # image 4's only annotation
    ann_file = str(tmp_path / "negative.json")
    write_json(ann_file, data)
    dataset = COCODataset(ann_file, coco_fixture.root, True)
    assert dataset.load_stats["empty_box"] == 2
    assert 4 not in dataset.ids


def test_coco_labels_follow_json_category_order_not_ids(coco_fixture):
    dataset = COCODataset(coco_fixture.ann_file, coco_fixture.root, True)
    # Category 3 is listed first in the JSON, so it is label 1 although 1 is the smallest id.
    assert dataset.json_category_id_to_contiguous_id[3] == 1
    assert dataset.json_category_id_to_contiguous_id[1] == 2
    assert dataset.get_category_labels(dataset.ids.index(2)) == [1, 2]


# ---------------------------------------------------------------------------------------------
# LVISDataset
# ---------------------------------------------------------------------------------------------


def test_lvis_records_match_lvis_api(lvis_fixture):
    reference = LVIS(lvis_fixture.ann_file)
    dataset = LVISDataset(lvis_fixture.ann_file, lvis_fixture.root, False)
    assert isinstance(dataset.lvis, LVIS)
    assert dataset.ids == sorted(reference.get_img_ids())

    ascending = sorted(reference.get_cat_ids())
    assert [c["id"] for c in lvis_fixture.data["categories"]] != ascending  # JSON is shuffled
    assert dataset.json_category_id_to_contiguous_id == {c: i + 1 for i, c in enumerate(ascending)}
    assert list(dataset.categories) == ascending

    for index, image_id in enumerate(dataset.ids):
        record = reference.imgs[image_id]
        assert dataset.get_img_info(index) == record
        image, target, returned_index = dataset[index]
        assert returned_index == index
        assert image.size == (record["width"], record["height"])
        annotations = reference.load_anns(reference.get_ann_ids(img_ids=[image_id]))
        kept, boxes = _expected_boxes(annotations, record["width"], record["height"])
        assert_boxes_equal(target.bbox, boxes)
        labels = [ascending.index(a["category_id"]) + 1 for a in kept]
        assert target.get_field("labels").tolist() == labels
        assert dataset.get_category_labels(index) == sorted(
            {ascending.index(a["category_id"]) + 1 for a in annotations}
        )


def test_lvis_image_paths(lvis_fixture):
    """v0.5: COCO-2014 file names resolve to the 2017 name under root; v1: root/<split>/<file>."""
    dataset = LVISDataset(lvis_fixture.ann_file, lvis_fixture.root, False)
    splits = set()
    for index in range(len(dataset)):
        record = dataset.get_img_info(index)
        path = lvis_image_path(lvis_fixture.root, record)
        assert os.path.isfile(path)
        if "file_name" in record:
            assert record["file_name"].startswith("COCO_")
            assert os.path.dirname(path) == lvis_fixture.root
        else:
            splits.add(os.path.basename(os.path.dirname(path)))
        with Image.open(path) as expected:
            image, _, _ = dataset[index]
            np.testing.assert_array_equal(np.asarray(image), np.asarray(expected.convert("RGB")))
    if lvis_fixture.data["info"]["version"] == "v1":
        assert splits == {"train2017", "val2017"}


def test_lvis_category_restriction_and_order(lvis_fixture):
    reference = LVIS(lvis_fixture.ann_file)
    kept_categories = [4, 1, 3]  # LST's order: label = 1 + position
    dataset = LVISDataset(
        lvis_fixture.ann_file, lvis_fixture.root, True, category_ids=kept_categories
    )
    assert dataset.json_category_id_to_contiguous_id == {4: 1, 1: 2, 3: 3}
    assert dataset.contiguous_category_id_to_json_id == {1: 4, 2: 1, 3: 3}
    assert list(dataset.categories) == kept_categories

    def kept(image_id):
        return [
            a
            for a in reference.load_anns(reference.get_ann_ids(img_ids=[image_id]))
            if a["category_id"] in kept_categories
        ]

    expected_ids = sorted(i for i in reference.get_img_ids() if _is_valid_training_image(kept(i)))
    assert dataset.ids == expected_ids
    assert len(expected_ids) < len(reference.get_img_ids())  # the restriction dropped images
    for index, image_id in enumerate(expected_ids):
        _, target, _ = dataset[index]
        record = reference.imgs[image_id]
        annotations, _ = _expected_boxes(kept(image_id), record["width"], record["height"])
        labels = [kept_categories.index(a["category_id"]) + 1 for a in annotations]
        assert target.get_field("labels").tolist() == labels


def test_lvis_unknown_category_in_restriction(lvis_fixture):
    with pytest.raises(ValueError, match=r"\[99\]"):
        LVISDataset(lvis_fixture.ann_file, lvis_fixture.root, True, category_ids=[1, 99])


def test_lvis_has_no_crowd_filter(lvis_fixture, tmp_path):
    """LVIS has no iscrowd: an LVIS annotation is never dropped as crowd."""
    data = copy.deepcopy(lvis_fixture.data)
    for a in data["annotations"]:
        a["iscrowd"] = 1
    ann_file = str(tmp_path / "lvis_crowd.json")
    write_json(ann_file, data)
    dataset = LVISDataset(ann_file, lvis_fixture.root, True)
    assert len(dataset) == len(data["images"])


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_missing_image_file_names_file_record_and_root(tmp_path):
    fixture = write_coco_fixture(str(tmp_path))
    os.remove(os.path.join(fixture.root, "000004.png"))
    dataset = COCODataset(fixture.ann_file, fixture.root, True)
    with pytest.raises(FileNotFoundError) as error:
        dataset[dataset.ids.index(4)]
    message = str(error.value)
    assert "000004.png" in message and "id 4" in message and fixture.root in message


def test_missing_lvis_v1_image_names_split_path(tmp_path):
    fixture = write_lvis_fixture(str(tmp_path), version="v1")
    dataset = LVISDataset(fixture.ann_file, fixture.root, False)
    record = dataset.get_img_info(0)
    path = lvis_image_path(fixture.root, record)
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="id {}".format(record["id"])) as error:
        dataset[0]
    assert path in str(error.value)


def _write_variant(tmp_path, data, name="broken.json"):
    ann_file = str(tmp_path / name)
    write_json(ann_file, data)
    return ann_file


@pytest.mark.parametrize("dataset_class", [COCODataset, LVISDataset])
@pytest.mark.parametrize("missing", ["images", "annotations", "categories"])
def test_json_without_a_section(coco_fixture, tmp_path, dataset_class, missing):
    data = {k: v for k, v in coco_fixture.data.items() if k != missing}
    ann_file = _write_variant(tmp_path, data)
    with pytest.raises(ValueError, match="missing key '{}'".format(missing)) as error:
        dataset_class(ann_file, coco_fixture.root, True)
    assert ann_file in str(error.value)


@pytest.mark.parametrize(
    "section, key", [("annotations", "bbox"), ("annotations", "category_id"), ("images", "height"),
                     ("categories", "name"), ("images", "file_name")]
)
def test_json_record_without_a_key(coco_fixture, tmp_path, section, key):
    data = copy.deepcopy(coco_fixture.data)
    del data[section][1][key]
    ann_file = _write_variant(tmp_path, data)
    with pytest.raises(ValueError, match="'{}'".format(key)) as error:
        COCODataset(ann_file, coco_fixture.root, True)
    assert ann_file in str(error.value)


def test_lvis_image_without_file_name_or_coco_url(tmp_path):
    fixture = write_lvis_fixture(str(tmp_path), version="v1")
    data = copy.deepcopy(fixture.data)
    del data["images"][2]["coco_url"]
    ann_file = _write_variant(tmp_path, data)
    with pytest.raises(ValueError, match="coco_url") as error:
        LVISDataset(ann_file, fixture.root, True)
    assert "id {}".format(data["images"][2]["id"]) in str(error.value)


@pytest.mark.parametrize("content", ["[1, 2, 3]", "{not json", '"a string"'])
def test_file_that_is_not_an_annotation_json(tmp_path, content):
    ann_file = str(tmp_path / "not_coco.json")
    with open(ann_file, "w") as f:
        f.write(content)
    with pytest.raises(ValueError, match="not_coco.json"):
        LVISDataset(ann_file, str(tmp_path), True)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        COCODataset(str(tmp_path / "nowhere.json"), str(tmp_path), True)


@pytest.mark.parametrize("dataset_class", [COCODataset, LVISDataset])
def test_annotation_with_unknown_category(coco_fixture, tmp_path, dataset_class):
    data = copy.deepcopy(coco_fixture.data)
    data["annotations"][4]["category_id"] = 42
    ann_file = _write_variant(tmp_path, data)
    with pytest.raises(ValueError, match="annotation id 5 has category_id 42"):
        dataset_class(ann_file, coco_fixture.root, True)


def test_annotation_with_unknown_image(coco_fixture, tmp_path):
    data = copy.deepcopy(coco_fixture.data)
    data["annotations"][0]["image_id"] = 1234
    ann_file = _write_variant(tmp_path, data)
    with pytest.raises(ValueError, match="annotation id 1 has image_id 1234"):
        COCODataset(ann_file, coco_fixture.root, True)


def test_rle_segmentation_on_non_crowd_annotation_is_skipped(coco_fixture, tmp_path):
    data = copy.deepcopy(coco_fixture.data)
    data["annotations"][3]["segmentation"] = {"counts": [10, 5, 2385], "size": [60, 40]}
    ann_file = _write_variant(tmp_path, data)
    dataset = COCODataset(ann_file, coco_fixture.root, True)
    assert dataset.load_stats["rle_segmentation"] == 1
    assert 4 not in dataset.ids


def test_flat_segmentation_is_not_a_polygon_list(coco_fixture, tmp_path):
    data = copy.deepcopy(coco_fixture.data)
    data["annotations"][1]["segmentation"] = [30, 20, 46, 20, 46, 40]
    ann_file = _write_variant(tmp_path, data)
    with pytest.raises(ValueError, match="annotation id 2 has segmentation"):
        COCODataset(ann_file, coco_fixture.root, True)


# ---------------------------------------------------------------------------------------------
# ConcatDataset
# ---------------------------------------------------------------------------------------------


def test_concat_dataset_delegates_per_image_queries(coco_fixture, tmp_path):
    lvis_fixture = write_lvis_fixture(str(tmp_path), version="v1", num_images=5)
    coco = COCODataset(coco_fixture.ann_file, coco_fixture.root, True)
    lvis = LVISDataset(lvis_fixture.ann_file, lvis_fixture.root, True)
    both = ConcatDataset([coco, lvis])
    assert len(both) == len(coco) + len(lvis)
    parts = [(coco, i) for i in range(len(coco))] + [(lvis, i) for i in range(len(lvis))]
    for index, (part, part_index) in enumerate(parts):
        assert both.get_img_info(index) == part.get_img_info(part_index)
        assert both.get_category_labels(index) == part.get_category_labels(part_index)
        assert both[index][2] == part_index
    assert both.categories == {**coco.categories, **lvis.categories}
