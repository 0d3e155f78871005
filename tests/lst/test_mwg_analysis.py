"""Analyses of LST's meta weight generator (issue #7): the new-class AP per phase with and without
MWG (Figure 9, engine/report.py + tools/lst_report.py mwg), the t-SNE of the attention over the
base classes (Figure 6, engine/mwg_analysis.py + tools/lst_mwg_attention.py) on a tiny trained
MWG phase, and the pure helpers of tools/benchmarks/bench_mwg_memory.py."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_training import (
    REPO_ROOT,
    TEST_LST_CONFIGS,
    seed_everything,
    train_net_module,
    write_random_phase1_experiment,
)
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.data import make_data_loader
from maskrcnn_benchmark.lst.division import divide_categories
from maskrcnn_benchmark.lst.experiment import Experiment
from maskrcnn_benchmark.lst.phase import ResolvedPhase
from maskrcnn_benchmark.lst.experiment import GENERATOR_FILE_NAME
from maskrcnn_benchmark.lst.mwg_analysis import load_mwg_phase, write_attention_tsne
from maskrcnn_benchmark.lst.phase_config import phase_config
from maskrcnn_benchmark.lst.report import ReportInputError, mwg_phase_rows, write_mwg_report
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.utils.miscellaneous import save_config


def write_json(path, obj):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def check_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100
        image.load()  # a truncated png fails here


def env_with_repo():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_tool(script, *args):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", script), *map(str, args)],
                          env=env_with_repo(), capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


def markdown_rows(markdown):
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


# ----------------------------------------------------------------------------- Figure 9
# Training instances per category: base 1, 2 (head); phase 1 = 3, 4, 5; phase 2 = 6, 7, 8.
INSTANCES = {1: 40, 2: 30, 3: 12, 4: 4, 5: 2, 6: 5, 7: 3, 8: 1}  # 6: exactly 5, not "< 5"


def write_train_json(path):
    annotations, next_id = [], 1
    for category_id, count in INSTANCES.items():
        for k in range(count):
            annotations.append({"id": next_id, "image_id": 1 + (next_id % 7), "category_id": category_id,
                                "bbox": [1.0, 1.0, 5.0, 5.0], "area": 25.0})
            next_id += 1
    return write_json(path, {
        "images": [{"id": i, "file_name": "{}.jpg".format(i), "width": 20, "height": 20} for i in range(1, 8)],
        "categories": [{"id": c, "name": "cat{}".format(c)} for c in INSTANCES],
        "annotations": annotations,
    })


def make_experiment(root, train_json, per_category, new_ap, finished):
    """An experiment folder: phases.json (base 2, phase size 3) and phase_<t>/inference/val/
    metrics.json for t in ``finished`` with "groups"."new" = new_ap[t] and the per-category APs."""
    Experiment(str(root)).prepare(train_json, 2, 3)
    for phase in finished:
        write_json(root / "phase_{}".format(phase) / "inference" / "val" / "metrics.json", {"segm": {
            "AP": 0.1, "groups": {"old": 0.2, "new": new_ap[phase], "all": 0.15},
            "per_category_AP": {str(c): ap for c, ap in per_category[phase].items()},
        }})


def expected_few_shot(per_category_phase, new_ids):
    """Mean in percent (one decimal) of the defined APs of the new classes with < 5 instances,
    instance counts from the annotations themselves."""
    counts = Counter(INSTANCES)
    values = [per_category_phase[c] for c in new_ids if counts[c] < 5 and per_category_phase[c] >= 0]
    return round(100 * sum(values) / len(values), 1) if values else None


# Per-category AP of the classes seen in each phase (-1: undefined).
WITH_PER_CATEGORY = {1: {1: 0.5, 2: 0.4, 3: 0.33, 6: 0.3, 4: 0.21},
                     2: {1: 0.5, 2: 0.4, 3: 0.3, 6: 0.25, 4: 0.2, 7: 0.124, 5: 0.08, 8: -1.0}}
WITHOUT_PER_CATEGORY = {1: {1: 0.5, 2: 0.4, 3: 0.3, 6: 0.2, 4: 0.11}}


@pytest.fixture
def mwg_experiments(tmp_path):
    train_json = write_train_json(tmp_path / "train.json")
    with_dir, without_dir = tmp_path / "with", tmp_path / "without"
    make_experiment(with_dir, train_json, WITH_PER_CATEGORY, {1: 0.2341, 2: 0.111}, finished=[1, 2])
    make_experiment(without_dir, train_json, WITHOUT_PER_CATEGORY, {1: 0.1878}, finished=[1])
    return train_json, with_dir, without_dir


def test_divided_as_the_fixture_assumes(mwg_experiments):
    _, with_dir, _ = mwg_experiments
    groups = json.loads((with_dir / "phases.json").read_text())["groups"]
    assert groups == [[1, 2], [3, 6, 4], [7, 5, 8]]


def test_mwg_rows_equal_the_inputs_and_few_shot_ap_is_the_mean_of_those_classes(mwg_experiments):
    train_json, with_dir, without_dir = mwg_experiments
    groups = json.loads((with_dir / "phases.json").read_text())["groups"]
    rows = mwg_phase_rows(str(with_dir), train_json=train_json)
    assert [row["phase"] for row in rows] == [1, 2]
    assert [row["AP new"] for row in rows] == [23.4, 11.1]
    # phase 1 new = 3 (12), 6 (5), 4 (4): only category 4 has < 5 instances.
    assert rows[0]["#new <5"] == 1 and rows[0]["AP new <5"] == 21.0
    # phase 2 new = 7 (3), 5 (2), 8 (1, undefined AP): mean of 7 and 5.
    assert rows[1]["#new <5"] == 3
    assert rows[1]["AP new <5"] == 10.2  # (12.4 + 8) / 2
    assert [row["AP new <5"] for row in rows] == [
        expected_few_shot(WITH_PER_CATEGORY[t], groups[t]) for t in (1, 2)]

    without = mwg_phase_rows(str(without_dir), train_json=train_json)
    assert [row["phase"] for row in without] == [1, 2] and without[1]["metrics_file"] is None
    assert without[0]["AP new"] == 18.8 and without[1]["AP new"] is None


def test_mwg_report_files_and_table(mwg_experiments, tmp_path):
    train_json, with_dir, without_dir = mwg_experiments
    output_dir = tmp_path / "report"
    markdown = write_mwg_report(str(with_dir), str(without_dir), str(output_dir), train_json)
    assert (output_dir / "mwg_new_class_ap.md").read_text() == markdown
    assert markdown_rows(markdown) == [
        ["1", "3", "1", "23.4", "18.8", "21.0", "11.0"],
        ["2", "3", "3", "11.1", "not finished", "10.2", "not finished"],
    ]
    written = json.loads((output_dir / "mwg_new_class_ap.json").read_text())
    assert [row["AP new"] for row in written["with_mwg"]["rows"]] == [23.4, 11.1]
    assert [row["AP new <5"] for row in written["without_mwg"]["rows"]] == [11.0, None]
    check_png(output_dir / "mwg_new_class_ap.png")


def test_mwg_report_reads_the_train_json_from_the_phase_config(mwg_experiments, tmp_path):
    train_json, with_dir, without_dir = mwg_experiments
    catalog = tmp_path / "catalog.py"
    catalog.write_text(
        "class DatasetCatalog:\n"
        "    @staticmethod\n"
        "    def get(name):\n"
        "        return dict(factory='LVISDataset', args=dict(root='.', ann_file={!r}))\n".format(train_json))
    cfg = default_cfg.clone()
    cfg.merge_from_list(["PATHS_CATALOG", str(catalog), "DATASETS.TRAIN", ("train",)])
    save_config(cfg, str(with_dir / "phase_1" / "config.yml"))
    rows = mwg_phase_rows(str(with_dir))
    assert [row["AP new <5"] for row in rows] == [21.0, 10.2]
    assert [row["AP new <5"] for row in mwg_phase_rows(str(without_dir))] == [None, None]  # no config, no counts


def test_mwg_report_errors(mwg_experiments, tmp_path):
    train_json, with_dir, _ = mwg_experiments
    other = tmp_path / "other"
    Experiment(str(other)).prepare(train_json, 3, 3)
    with pytest.raises(ReportInputError, match="divide the classes differently"):
        write_mwg_report(str(with_dir), str(other), str(tmp_path / "r"), train_json)
    with pytest.raises(ReportInputError, match="--train-json"):
        mwg_phase_rows(str(with_dir), train_json=str(tmp_path / "missing.json"))


@pytest.mark.slow
def test_cli_mwg(mwg_experiments, tmp_path):
    train_json, with_dir, without_dir = mwg_experiments
    result = run_tool("lst_report.py", "mwg", "--with-mwg", with_dir, "--without-mwg", without_dir,
                      "--train-json", train_json)
    assert result.returncode == 0, result.stderr
    assert markdown_rows(result.stdout)[0] == ["1", "3", "1", "23.4", "18.8", "21.0", "11.0"]
    check_png(with_dir / "report" / "mwg_new_class_ap.png")
    failed = run_tool("lst_report.py", "mwg", "--with-mwg", with_dir, "--without-mwg", tmp_path / "nowhere")
    assert failed.returncode != 0 and "phases.json" in failed.stderr


# ----------------------------------------------------------------------------- Figure 6
NUM_CLASSES, BASE = 7, 4  # C_0 of 4 classes, phase 1 adds 2
MWG_OPTS = [
    "MODEL.FEW_SHOT.ENABLED", True,
    "MODEL.FEW_SHOT.CLASSES_PER_EPISODE", 2,
    "MODEL.FEW_SHOT.SUPPORT_PROPOSALS", False,
    "SOLVER.MAX_ITER", 2,
    "SOLVER.STEPS", (1,),
    "SOLVER.CHECKPOINT_PERIOD", 100,
    "TEST.IMS_PER_BATCH", 1,  # the support pass one image at a time, as the reference below
]


@pytest.fixture(scope="module")
def trained_mwg_phase(tmp_path_factory):
    """An experiment whose phase 1 is a short episodic MWG phase (2 episodes) on the LVIS fixture,
    from a random theta_0, with its config.yml as tools/lst_phase_config.py writes it."""
    out, catalog, fixture = write_random_phase1_experiment(tmp_path_factory.mktemp("mwg_analysis"), BASE,
                                                           NUM_CLASSES)
    cfg = phase_config(TEST_LST_CONFIGS, str(out), 1, ["PATHS_CATALOG", catalog, *MWG_OPTS])
    save_config(cfg, os.path.join(Experiment(str(out)).phase(1).dir, "config.yml"))
    seed_everything(0)
    train_net_module().train(cfg, 0, False, ResolvedPhase.from_config(cfg))
    assert os.path.isfile(os.path.join(Experiment(str(out)).phase(1).dir, GENERATOR_FILE_NAME))
    return {"out": out, "cfg": cfg, "fixture": fixture}


def reference_attention(cfg, experiment_dir, category_ids):
    """Per new class: mean over its training images (test-time transforms) of the mean attention
    of its GT boxes, computed image by image from the loaded model and generator."""
    _, model, generator = load_mwg_phase(experiment_dir, 1)
    test_cfg = cfg.clone()
    test_cfg.defrost()
    test_cfg.DATASETS.TEST = cfg.DATASETS.TRAIN
    dataset = make_data_loader(test_cfg, is_train=False)[0].dataset
    expected = {}
    with torch.no_grad():
        for label, category_id in zip(range(BASE + 1, NUM_CLASSES), category_ids):
            per_image = []
            for index in range(len(dataset)):
                image, target, _ = dataset[index]
                boxes = target.bbox[target.get_field("labels") == label]
                if len(boxes) == 0:
                    continue
                features = model.backbone(to_image_list([image], 32).tensors)
                roi_features = model.roi_heads.box.feature_extractor(features, [BoxList(boxes, target.size)])
                per_image.append(generator.attention(roi_features.flatten(1)).mean(dim=0))
            expected[label] = (torch.stack(per_image).mean(dim=0), len(per_image))
    return expected


def test_attention_tsne_of_a_trained_mwg_phase(trained_mwg_phase):
    out, cfg, fixture = trained_mwg_phase["out"], trained_mwg_phase["cfg"], trained_mwg_phase["fixture"]
    report = write_attention_tsne(str(out))  # default: the last finished MWG phase, 1
    assert report["phase"] == 1
    check_png(out / "report" / "mwg_attention_tsne.png")
    assert json.loads((out / "report" / "mwg_attention_tsne.json").read_text()) == report

    groups = json.loads((out / "phases.json").read_text())["groups"]
    names = {c["id"]: c["name"] for c in fixture.data["categories"]}
    assert [(b["label"], b["category_id"], b["name"]) for b in report["base_classes"]] == [
        (label, c, names[c]) for label, c in zip(range(1, BASE + 1), groups[0])]
    new = report["new_classes"]
    assert [(n["label"], n["category_id"], n["name"]) for n in new] == [
        (label, c, names[c]) for label, c in zip(range(BASE + 1, NUM_CLASSES), groups[1])]

    expected = reference_attention(cfg, str(out), groups[1])
    for entry in new:
        attention = torch.tensor(entry["attention"], dtype=torch.float64)
        assert attention.shape == (BASE,) and bool((attention >= 0).all())
        assert math.isclose(float(attention.sum()), 1.0, abs_tol=1e-6)
        mean, num_images = expected[entry["label"]]
        torch.testing.assert_close(attention, mean.double(), rtol=1e-5, atol=1e-6)
        images = {a["image_id"] for a in fixture.data["annotations"] if a["category_id"] == entry["category_id"]}
        assert entry["support_images"] == num_images == len(images)
        assert entry["support_rois"] == sum(
            1 for a in fixture.data["annotations"] if a["category_id"] == entry["category_id"])
        assert len(entry["tsne"]) == 2 and all(math.isfinite(v) for v in entry["tsne"])
    assert report["perplexity"] == 1  # min(30, 2 new classes - 1)


@pytest.mark.slow
def test_cli_attention_and_errors(trained_mwg_phase, tmp_path):
    out = trained_mwg_phase["out"]
    output = tmp_path / "figure6.png"
    result = run_tool("lst_mwg_attention.py", "--experiment-dir", out, "--phase", 1, "--output", output,
                      "MODEL.DEVICE", "cpu")
    assert result.returncode == 0, result.stderr
    check_png(output)
    rows = json.loads((tmp_path / "figure6.json").read_text())["new_classes"]
    assert all(math.isclose(sum(row["attention"]), 1.0, abs_tol=1e-6) for row in rows)
    for phase in (0, 2):
        failed = run_tool("lst_mwg_attention.py", "--experiment-dir", out, "--phase", phase)
        assert failed.returncode != 0 and "phases t >= 1 only" in failed.stderr, failed.stderr
    empty = tmp_path / "empty"
    Experiment(str(empty)).prepare(trained_mwg_phase["fixture"].ann_file, BASE, 2)
    failed = run_tool("lst_mwg_attention.py", "--experiment-dir", empty)
    assert failed.returncode != 0 and "no finished MWG phase" in failed.stderr


# ----------------------------------------------------------------------------- benchmark helpers
def bench_module():
    path = os.path.join(REPO_ROOT, "tools", "benchmarks", "bench_mwg_memory.py")
    spec = importlib.util.spec_from_file_location("bench_mwg_memory_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_lvis(num_images, num_annotations, seed=0):
    rng = np.random.default_rng(seed)
    images = [{"id": i, "file_name": "{}.jpg".format(i), "width": 100, "height": 80,
               "neg_category_ids": [1], "not_exhaustive_category_ids": [2]} for i in range(1, num_images + 1)]
    annotations = [{"id": k, "image_id": int(rng.integers(1, num_images + 1)), "category_id": 1 + k % 64,
                    "bbox": [1.0, 2.0, 10.0 + k % 5, 12.0], "area": 100.0} for k in range(1, num_annotations + 1)]
    categories = [{"id": c, "name": str(c)} for c in range(1, 65)]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_bench_relabelling_gives_every_new_class_an_image_and_the_head_to_the_base():
    bench = bench_module()
    data = fake_lvis(2745, 13677)  # the size of datasets/synthetic_lt/train.json
    relabelled = bench.relabel_long_tailed(data, 24)
    annotations = relabelled["annotations"]
    assert len(annotations) == len(data["annotations"])
    for before, after in zip(data["annotations"], annotations):  # only the category changes
        assert dict(before, category_id=None) == dict(after, category_id=None)
    counts = Counter(a["category_id"] for a in annotations)
    images = Counter(c for c, _ in {(a["category_id"], a["image_id"]) for a in annotations})
    new_ids = range(25, 25 + bench.NUM_NEW_CLASSES)
    assert sorted(counts) == list(range(1, 25 + bench.NUM_NEW_CLASSES))
    assert all(images[c] >= 1 for c in new_ids)
    assert min(counts[c] for c in range(1, 25)) > max(counts[c] for c in new_ids)
    assert [c["instance_count"] for c in relabelled["categories"]] == [counts[c] for c in sorted(counts)]
    assert [c["image_count"] for c in relabelled["categories"]] == [images[c] for c in sorted(counts)]
    assert all(image["neg_category_ids"] == [] for image in relabelled["images"])
    # Divided with base 24 and phase size 160, phase 1 holds the 160 most frequent new classes.
    phases = divide_categories(counts, 24, 160)
    assert sorted(phases["groups"][0]) == list(range(1, 25))
    top = sorted(new_ids, key=lambda c: (-counts[c], c))[:160]
    assert phases["groups"][1] == top
    assert sum(c["frequency"] == "r" for c in relabelled["categories"]) > 300  # a long rare tail, as LVIS


def test_bench_relabelling_refuses_too_few_annotations():
    with pytest.raises(ValueError, match="too few"):
        bench_module().relabel_long_tailed(fake_lvis(50, 3000), 24)


def test_bench_ratio_table_and_goal():
    bench = bench_module()

    def result(peak, setup, seconds, cuda=None):
        return {"new_classes": 0, "num_classes": 0, "peak_rss_mib": peak, "rss_setup_mib": setup,
                "seconds_per_episode": seconds, "cuda_max_allocated_mib": cuda, "threads": 1}

    results = {40: result(900.0, 800.0, 0.5), 160: result(1000.0, 800.0, 1.0), 960: result(1250.0, 810.0, 2.5)}
    rows = bench.ratio_rows(results, 160)
    assert [r["phase_size"] for r in rows] == [40, 160, 960]
    assert [r["peak_rss_ratio"] for r in rows] == pytest.approx([0.9, 1.0, 1.25])
    assert [r["training_rss_ratio"] for r in rows] == pytest.approx([0.5, 1.0, 2.2])
    assert [r["time_ratio"] for r in rows] == pytest.approx([0.5, 1.0, 2.5])
    assert all(r["cuda_ratio"] is None for r in rows)
    table = markdown_rows(bench.markdown_table({True: rows, False: rows[:1]}, 160))
    assert table[2] == ["on", "960", "0", "810", "1250", "1.25x", "440", "2.20x", "2.50", "2.50x"]
    assert table[3] == ["off", "40", "0", "800", "900", "0.90x", "100", "0.50x", "0.50", "0.50x"]
    assert bench.goal_verdict(results) == "NOT met"
    assert bench.goal_verdict({**results, 960: result(1200.0, 800.0, 1.0)}) == "met"
    assert bench.goal_verdict({40: results[40], 160: results[160]}) is None
    # On a GPU the CUDA peak decides.
    gpu = {160: result(1000.0, 800.0, 1.0, cuda=100.0), 960: result(5000.0, 800.0, 1.0, cuda=115.0)}
    assert bench.goal_verdict(gpu) == "met"
    assert bench.ratio_rows(gpu, 160)[1]["cuda_ratio"] == pytest.approx(1.15)
    with pytest.raises(ValueError, match="reference phase size 480"):
        bench.ratio_rows(results, 480)
