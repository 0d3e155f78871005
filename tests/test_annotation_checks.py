"""Bad annotation files, images and results, one defect at a time in a copy of a fixture written
by tests/fixtures_data.py: each is skipped and counted (training) or refused with a one-line
message naming the file, the record and the fix (evaluation ground truth, and what would crash);
none passes silently. The NaN-polygon cases run in subprocesses under a 2 GB memory limit (they
used to segfault pycocotools or grow to ~23 GB).

Expectations are derived from the written JSON with the documented rules, counted here
independently of annotation_checks.py."""
import copy
import json
import logging
import math
import os
import random
import resource
import subprocess
import sys

import pytest

from fixtures_data import lvis_image_path, write_json, write_lvis_fixture
from maskrcnn_benchmark.lst.experiment import Experiment
from maskrcnn_benchmark.data.datasets import LVISDataset
from maskrcnn_benchmark.data.datasets.annotation_checks import AnnotationError
from maskrcnn_benchmark.data.datasets.evaluation.lvis.bins import training_instance_counts
from maskrcnn_benchmark.data.datasets.evaluation.lvis.results_file import (
    EvaluationInputError,
    load_ground_truth,
    load_results,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_LIMIT = 2 * 1024 ** 3


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_lvis_fixture(str(tmp_path_factory.mktemp("lvis")), version="v1", num_images=8)


def variant(fixture, tmp_path, change, name="variant.json"):
    """Write a deep copy of the fixture's JSON after ``change(data)``; returns its path."""
    data = copy.deepcopy(fixture.data)
    change(data)
    path = str(tmp_path / name)
    write_json(path, data)
    return path


def one_line(message):
    assert "\n" not in message, message
    return message


def training_usable(annotation, image):
    """The documented training rule, computed here: finite box with more than 1 pixel inside the
    image in both directions, and at least one polygon of >= 3 finite points."""
    x, y, w, h = annotation["bbox"]
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return False
    inside_w = min(x + w, image["width"]) - max(x, 0)
    inside_h = min(y + h, image["height"]) - max(y, 0)
    polygons = [p for p in annotation["segmentation"]
                if len(p) >= 6 and len(p) % 2 == 0 and all(math.isfinite(v) for v in p)]
    return inside_w > 1 and inside_h > 1 and bool(polygons)


# ----------------------------------------------------------------------------- skipped and counted
def test_bad_boxes_are_skipped_counted_and_named_in_training(fixture, tmp_path, caplog):
    def change(data):
        data["annotations"][0]["bbox"][2] = float("nan")
        data["annotations"][1]["bbox"] = [500, 500, 5, 5]  # outside its image
    path = variant(fixture, tmp_path, change)
    with caplog.at_level(logging.WARNING):
        dataset = LVISDataset(path, fixture.root, True)
    assert dataset.load_stats["bbox_not_finite"] == 1
    assert dataset.load_stats["box_outside_image"] == 1
    kept = sum(len(dataset._annotations[i]) for i in dataset.ids)
    assert kept == len(fixture.data["annotations"]) - 2
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and path in warning[0]
    assert "1 annotations with a NaN or infinite bbox coordinate (annotation id 1 has bbox" in warning[0]
    assert "entirely outside its image (annotation id 2" in warning[0]
    # Nothing is dropped later, at run time: every target keeps all its checked annotations.
    for index in range(len(dataset)):
        _, target, _ = dataset[index]
        assert len(target) == len(dataset._annotations[dataset.ids[index]])


@pytest.mark.parametrize("change, match, fix", [
    (lambda d: d["annotations"][0]["bbox"].__setitem__(2, float("nan")),
     "annotation id 1 has bbox", "fix or remove these annotations"),
    (lambda d: d["annotations"][1].__setitem__("bbox", [500, 500, 5, 5]),
     "annotation id 2 has bbox", "fix the bbox"),
    (lambda d: d["annotations"][1].__setitem__("id", 1),
     "annotation id 1", "give every annotation its own id"),
])
def test_bad_ground_truth_is_an_error(fixture, tmp_path, change, match, fix):
    path = variant(fixture, tmp_path, change)
    with pytest.raises(AnnotationError, match=match) as error:
        LVISDataset(path, fixture.root, False)
    message = one_line(str(error.value))
    assert message.startswith(path) and fix in message


def test_duplicate_annotation_ids_are_counted_not_deduplicated_silently(fixture, tmp_path, caplog):
    def change(data):
        for a in data["annotations"][1:4]:
            a["id"] = data["annotations"][0]["id"]
    path = variant(fixture, tmp_path, change)
    with caplog.at_level(logging.WARNING):
        dataset = LVISDataset(path, fixture.root, True)
    assert dataset.load_stats["duplicate_annotation_id"] == 3
    assert "3 annotations whose id repeats an earlier annotation's" in caplog.text


@pytest.mark.parametrize("training", [True, False])
def test_duplicate_image_ids_are_an_error(fixture, tmp_path, training):
    def change(data):
        data["images"][1]["id"] = data["images"][0]["id"]
    path = variant(fixture, tmp_path, change)
    with pytest.raises(AnnotationError, match="image id {}".format(fixture.data["images"][0]["id"])):
        LVISDataset(path, fixture.root, training)


@pytest.mark.parametrize("width, match", [(0, "width 0"), ("32", "width '32'"), (10 ** 6, "1000000")])
def test_implausible_image_size_is_an_error(fixture, tmp_path, width, match):
    path = variant(fixture, tmp_path, lambda d: d["images"][2].__setitem__("width", width))
    with pytest.raises(AnnotationError, match=match) as error:
        LVISDataset(path, fixture.root, True)
    assert "true width and height" in one_line(str(error.value))


@pytest.mark.parametrize("training", [True, False])
def test_category_id_as_string_is_a_type_error(fixture, tmp_path, training):
    def change(data):
        data["annotations"][0]["category_id"] = str(data["annotations"][0]["category_id"])
    path = variant(fixture, tmp_path, change)
    with pytest.raises(AnnotationError, match="not an integer.*annotation id 1 has category_id '") as error:
        LVISDataset(path, fixture.root, training)
    assert "JSON integers" in one_line(str(error.value))


# ----------------------------------------------------------------------------- images
def _first_image(fixture, tmp_path, corrupt):
    """A training dataset on a copy of the fixture whose first image file is ``corrupt(bytes)``."""
    import shutil

    root = str(tmp_path / "images")
    shutil.copytree(fixture.root, root)
    dataset = LVISDataset(fixture.ann_file, root, True)
    record = dataset.get_img_info(0)
    path = lvis_image_path(root, record)
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(corrupt(content))
    return dataset, record, path


@pytest.mark.parametrize("corrupt", [lambda b: random.Random(0).randbytes(len(b)), lambda b: b[:len(b) // 2]],
                         ids=["random_bytes", "truncated"])
def test_undecodable_image_names_file_and_record(fixture, tmp_path, corrupt):
    dataset, record, path = _first_image(fixture, tmp_path, corrupt)
    with pytest.raises(OSError) as error:
        dataset[0]
    message = one_line(str(error.value))
    assert path in message and "image record id {}".format(record["id"]) in message
    assert "replace the file" in message


def test_image_size_differing_from_its_record_is_an_error(fixture, tmp_path):
    from PIL import Image

    dataset, record, path = _first_image(fixture, tmp_path, lambda b: b)
    Image.new("RGB", (record["width"] + 3, record["height"])).save(path, format="JPEG")
    with pytest.raises(ValueError) as error:
        dataset[0]
    message = one_line(str(error.value))
    assert "{}x{} pixels".format(record["width"] + 3, record["height"]) in message
    assert "width {}, height {}".format(record["width"], record["height"]) in message
    assert path in message and "correct the record" in message


# ----------------------------------------------------------------------------- NaN polygons
_NAN_DATASET_SCRIPT = r"""
import json, sys
from maskrcnn_benchmark.data.datasets import LVISDataset
from maskrcnn_benchmark.data.datasets.annotation_checks import AnnotationError
ann_file, root, all_nan = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
result = {}
try:
    dataset = LVISDataset(ann_file, root, True)
    for index in range(len(dataset)):
        _, target, _ = dataset[index]
        target.get_field("masks").convert("mask")  # rasterised by pycocotools
    result["stats"] = dict(dataset.load_stats)
except ValueError as error:
    result["training_error"] = str(error)
try:
    LVISDataset(ann_file, root, False)
except AnnotationError as error:
    result["test_error"] = str(error)
print(json.dumps(result))
"""


def _limit_memory():
    # RLIMIT_DATA (heap and anonymous mappings): RLIMIT_AS would also count the ~3 GB of address
    # space that importing torch maps from its shared libraries.
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run_limited(args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=300, preexec_fn=_limit_memory)
    assert done.returncode >= 0, "killed by signal {}: {}".format(-done.returncode, done.stderr)
    return done


@pytest.mark.parametrize("all_nan", [False, True], ids=["one_polygon", "every_polygon"])
def test_nan_polygons_never_reach_pycocotools(fixture, tmp_path, all_nan):
    def change(data):
        for a in data["annotations"] if all_nan else data["annotations"][:1]:
            a["segmentation"][0][1] = float("nan")
    path = variant(fixture, tmp_path, change)
    done = _run_limited(["-c", _NAN_DATASET_SCRIPT, path, fixture.root, str(int(all_nan))])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    if all_nan:
        # Not silently trained on empty masks: no annotation is left, and the run stops.
        assert "no training image has a usable annotation" in one_line(result["training_error"])
        assert "{} polygons with a coordinate".format(len(fixture.data["annotations"])) \
            in result["training_error"]
    else:
        assert result["stats"]["polygon_not_finite"] == 1
        assert result["stats"]["no_polygon"] == 1
    assert one_line(result["test_error"]).startswith(path)
    assert "a polygon of annotation id 1: [" in result["test_error"]


def test_eval_lvis_refuses_nan_polygon_ground_truth(fixture, tmp_path):
    def change(data):
        data["annotations"][2]["segmentation"][0][0] = float("nan")
        for image in data["images"]:
            image.setdefault("neg_category_ids", [])
            image.setdefault("not_exhaustive_category_ids", [])
        for a in data["annotations"]:
            a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    gt = variant(fixture, tmp_path, change, "val.json")
    a = fixture.data["annotations"][0]
    dt = str(tmp_path / "dt.json")
    write_json(dt, [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
                     "bbox": a["bbox"]}])
    done = _run_limited([os.path.join(REPO_ROOT, "tools", "eval_lvis.py"), "--gt", gt, "--dt", dt,
                         "--iou-type", "bbox"])
    assert done.returncode == 1
    message = one_line(done.stderr.strip().splitlines()[-1])
    assert message.startswith("eval_lvis.py: error: ground-truth file " + gt)
    assert "annotation id 3" in message and "fix or remove these polygons" in message


# ----------------------------------------------------------------------------- training counts
def test_division_quotas_and_bins_agree_on_the_training_counts(fixture, tmp_path, caplog):
    """A training json with stale instance_count fields and annotations training drops: the
    division, the replay plans, the evaluation bins and the dataset all count the same."""
    def change(data):
        data["annotations"][0]["bbox"][3] = float("nan")
        data["annotations"][1]["segmentation"] = [[1, 2, float("inf"), 4, 5, 6]]
        data["annotations"][2]["bbox"] = [-50, -50, 10, 10]
        data["annotations"][3]["bbox"][2] = 0.5
        for c in data["categories"]:
            c["instance_count"] += 7  # stale
    path = variant(fixture, tmp_path, change, "train.json")
    with open(path) as f:
        data = json.load(f)
    images = {i["id"]: i for i in data["images"]}
    expected = {c["id"]: 0 for c in data["categories"]}
    expected_images = {c["id"]: set() for c in data["categories"]}
    for a in data["annotations"]:
        if training_usable(a, images[a["image_id"]]):
            expected[a["category_id"]] += 1
            expected_images[a["category_id"]].add(a["image_id"])
    assert sum(expected.values()) == len(data["annotations"]) - 4

    with caplog.at_level(logging.WARNING):
        phases, plans, division_counts = Experiment(str(tmp_path / "out")).prepare(path, 2, 2)
    assert dict(division_counts) == expected
    assert "instance_count fields differ" in caplog.text and "the counted values are used" in caplog.text
    assert phases["sorted_category_ids"] == sorted(expected, key=lambda c: (-expected[c], c))
    for t, plan in plans.items():
        new = phases["groups"][t]
        assert plan["n_c"] == pytest.approx(sum(expected[c] for c in new) / len(new))
        for c, entry in plan["old_classes"].items():
            c = int(c)
            n_k = expected[c] / len(expected_images[c]) if expected_images[c] else 0.0
            assert entry["n_k"] == pytest.approx(n_k)
    assert training_instance_counts(path) == expected
    dataset = LVISDataset(path, fixture.root, True)
    counted = {c: 0 for c in expected}
    for image_id in dataset.ids:
        for a in dataset._annotations[image_id]:
            counted[a["category_id"]] += 1
    assert counted == expected


def test_lst_prepare_refuses_unknown_category_and_warns_about_empty_ones(fixture, tmp_path, caplog):
    unknown = variant(fixture, tmp_path, lambda d: d["annotations"][4].__setitem__("category_id", 99),
                      "unknown.json")
    with pytest.raises(AnnotationError, match="annotation id 5 has category_id 99") as error:
        Experiment(str(tmp_path / "out_unknown")).prepare(unknown, 2, 2)
    assert "add the category" in one_line(str(error.value))

    def add_empty_category(data):
        data["categories"].append(dict(data["categories"][0], id=42, name="never_annotated"))
    empty = variant(fixture, tmp_path, add_empty_category, "empty.json")
    with caplog.at_level(logging.WARNING):
        phases, _, counts = Experiment(str(tmp_path / "out_empty")).prepare(empty, 2, 2)
    annotated = {a["category_id"] for a in fixture.data["annotations"]}
    never = sorted({c["id"] for c in fixture.data["categories"]} - annotated) + [42]
    assert [c for c, n in counts.items() if n == 0] == never
    assert phases["sorted_category_ids"][-len(never):] == never
    assert "{} categories have no training annotation (ids {})".format(len(never), never) \
        in caplog.text


# ----------------------------------------------------------------------------- evaluation
def _ground_truth(fixture, tmp_path, change=lambda data: None):
    def federated(data):
        for image in data["images"]:
            image.setdefault("neg_category_ids", [])
            image.setdefault("not_exhaustive_category_ids", [])
        for a in data["annotations"]:
            a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        change(data)
    return variant(fixture, tmp_path, federated, "gt.json")


def test_ground_truth_annotation_of_unknown_category_is_an_error(fixture, tmp_path):
    path = _ground_truth(fixture, tmp_path, lambda d: d["annotations"][0].__setitem__("category_id", 77))
    with pytest.raises(EvaluationInputError, match="annotation id 1 has category_id 77") as error:
        load_ground_truth(path)
    assert one_line(str(error.value)).startswith("ground-truth file " + path)


def _box_result(fixture, **changes):
    a = fixture.data["annotations"][0]
    return dict({"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.5,
                 "bbox": a["bbox"]}, **changes)


def test_results_problems(fixture, tmp_path, caplog):
    gt = load_ground_truth(_ground_truth(fixture, tmp_path))
    path = str(tmp_path / "results.json")

    write_json(path, [])
    with caplog.at_level(logging.WARNING):
        assert load_results(path, gt, "bbox") == []
    assert "holds no detection: every AP will be 0" in caplog.text

    write_json(path, [_box_result(fixture)])
    with pytest.raises(EvaluationInputError, match="--iou-type segm scores 'segmentation'") as error:
        load_results(path, gt, "segm")
    assert "evaluate it with --iou-type bbox" in one_line(str(error.value))

    write_json(path, [_box_result(fixture, category_id=str(fixture.data["annotations"][0]["category_id"]))])
    with pytest.raises(EvaluationInputError, match="is a str; write category ids as JSON integers"):
        load_results(path, gt, "bbox")
