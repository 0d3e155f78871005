"""LST phases (data/division.py, tools/lst_prepare.py): the class division and the replay
quotas on a hand-made annotation file (values computed by hand from the paper's definitions),
the CLI's files and refusals, phase-restricted datasets, and evaluation restricted to a phase's
categories (FastLVISEval against lvis-api's LVISEval with the same params.cat_ids)."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from lvis import LVIS

from fixtures_data import write_lvis_fixture, write_paths_catalog
from maskrcnn_benchmark.config import cfg
from maskrcnn_benchmark.data import make_data_loader
from maskrcnn_benchmark.lst import division
from maskrcnn_benchmark.lst.experiment import Experiment
from maskrcnn_benchmark.lst.phase import ResolvedPhase
from maskrcnn_benchmark.data.datasets.evaluation import evaluate
from maskrcnn_benchmark.data.datasets.evaluation.lvis.bins import ap_of_categories
from maskrcnn_benchmark.data.datasets.evaluation.lvis.fast_eval import FastLVISEval
from maskrcnn_benchmark.engine.inference import lvis_evaluation_options
from test_lvis_eval import SUMMARY_KEYS, _lvis_dataset, _predictions_for, lvis_api, make_case

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Hand-made training set. Instances (images): 9: 6 (5 images, two in image 1); 2: 4 (1 image);
# 5: 4 (4 images); 3: 2 (2 images); 1: 1; 8: 1; 7: none, although its record claims 50.
# Sorted by count, ties by id: 9, 2, 5, 3, 1, 8, 7.
ANNOTATIONS = (
    [(1, 9), (1, 9), (2, 9), (3, 9), (4, 9), (5, 9)]
    + [(6, 2)] * 4
    + [(1, 5), (2, 5), (3, 5), (4, 5)]
    + [(5, 3), (6, 3)]
    + [(2, 1), (3, 8)]
)


def hand_made_train():
    categories = [{"id": c, "name": "c{}".format(c)} for c in (5, 2, 9, 1, 7, 3, 8)]
    categories[4]["instance_count"] = 50  # id 7: the field is not what is counted
    return {
        "images": [{"id": i, "width": 10, "height": 10, "file_name": "x.jpg"} for i in range(1, 7)],
        "annotations": [
            {"id": k + 1, "image_id": image, "category_id": category, "bbox": [0, 0, 2, 2]}
            for k, (image, category) in enumerate(ANNOTATIONS)
        ],
        "categories": categories,
    }


@pytest.fixture
def train_json(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(hand_made_train()))
    return str(path)


# ---------------------------------------------------------------------------- division
def test_division_sorts_by_instance_count_with_ties_by_id():
    counts, images = division.category_statistics(hand_made_train())
    assert counts == {9: 6, 2: 4, 5: 4, 3: 2, 1: 1, 8: 1, 7: 0}
    assert images == {9: 5, 2: 1, 5: 4, 3: 2, 1: 1, 8: 1, 7: 0}
    phases = division.divide_categories(counts, base=2, phase_size=2)
    assert phases == {
        "sorted_category_ids": [9, 2, 5, 3, 1, 8, 7],
        "groups": [[9, 2], [5, 3], [1, 8], [7]],  # the last group is partial
        "base": 2,
        "phase_size": 2,
    }
    assert ResolvedPhase.from_phases(phases, 0).seen == [9, 2]
    assert ResolvedPhase.from_phases(phases, 2).seen == [9, 2, 5, 3, 1, 8]
    assert ResolvedPhase.from_phases(phases, 2).old == [9, 2, 5, 3]
    assert ResolvedPhase.from_phases(phases, 2).new == [1, 8]
    assert [ResolvedPhase.from_phases(phases, t).num_classes for t in range(4)] == [3, 5, 7, 8]
    with pytest.raises(ValueError, match="phases 0..3.*MODEL.LST.PHASE"):
        ResolvedPhase.from_phases(phases, 4).seen


def test_phase_labels_are_positions_in_the_sorted_order(tmp_path):
    fixture = write_lvis_fixture(str(tmp_path), num_images=16)
    counts, _ = division.category_statistics(fixture.data)
    phases = division.divide_categories(counts, base=2, phase_size=3)
    from maskrcnn_benchmark.data.datasets import LVISDataset

    seen = ResolvedPhase.from_phases(phases, 1).seen
    dataset = LVISDataset(fixture.ann_file, fixture.root, True, category_ids=seen)
    assert dataset.json_category_id_to_contiguous_id == {c: k + 1 for k, c in enumerate(seen)}
    # The old labels are a prefix of the new ones.
    base = LVISDataset(fixture.ann_file, fixture.root, True,
                       category_ids=ResolvedPhase.from_phases(phases, 0).seen)
    for c, label in base.json_category_id_to_contiguous_id.items():
        assert dataset.json_category_id_to_contiguous_id[c] == label


@pytest.mark.parametrize("base, phase_size, match", [
    (0, 2, "base size 0"), (7, 2, "base size 7"), (-1, 2, "base size"),
    (2, 0, "phase size 0"), (2, -3, "phase size"),
])
def test_bad_division_arguments(base, phase_size, match):
    counts, _ = division.category_statistics(hand_made_train())
    with pytest.raises(ValueError, match=match):
        division.divide_categories(counts, base, phase_size)


def test_bad_training_files(tmp_path):
    with pytest.raises(ValueError, match="missing.json not found"):
        division.load_train_annotations(str(tmp_path / "missing.json"))
    no_categories = tmp_path / "no_categories.json"
    no_categories.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="no_categories.json has no 'categories'"):
        division.load_train_annotations(str(no_categories))


def test_load_phases_validates(tmp_path):
    with pytest.raises(ValueError, match="lst_prepare.py"):
        division.load_phases(str(tmp_path / "phases.json"))
    counts, _ = division.category_statistics(hand_made_train())
    phases = division.divide_categories(counts, 2, 2)
    path = tmp_path / "phases.json"
    path.write_text(json.dumps(phases))
    assert division.load_phases(str(path)) == phases
    broken = dict(phases, groups=[[9, 2], [5, 3], [1, 8]])
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="phases.json is not a valid phases file.*sorted"):
        division.load_phases(str(path))


# ---------------------------------------------------------------------------- replay plan
# Phase 1: new 5, 3 -> n_c = (4 + 2) / 2 = 3. Old 9: n_k = 6 / 5 = 1.2, n_c / n_k = 2.5, ceil 3,
# NumPy round (half to even) 2. Old 2: n_k = 4 / 1 = 4, 0.75 -> ceil 1, round 1.
# Phase 2: new 1, 8 -> n_c = 1. 9: 1 / 1.2 -> 1 and 1; 2: 0.25 -> ceil 1, max(1, round 0) = 1;
# 5: n_k = 4 / 4 = 1 -> 1; 3: n_k = 2 / 2 = 1 -> 1.
EXPECTED_PLANS = {
    "ceil": {
        1: (3.0, {"9": (1.2, 3), "2": (4.0, 1)}),
        2: (1.0, {"9": (1.2, 1), "2": (4.0, 1), "5": (1.0, 1), "3": (1.0, 1)}),
    },
    "round": {
        1: (3.0, {"9": (1.2, 2), "2": (4.0, 1)}),
        2: (1.0, {"9": (1.2, 1), "2": (4.0, 1), "5": (1.0, 1), "3": (1.0, 1)}),
    },
}


@pytest.mark.parametrize("rule", ["ceil", "round"])
def test_replay_quotas_follow_the_formula(rule):
    counts, images = division.category_statistics(hand_made_train())
    phases = division.divide_categories(counts, 2, 2)
    for phase, (n_c, old) in EXPECTED_PLANS[rule].items():
        plan = division.make_replay_plan(phases, phase, counts, images, rule)
        assert plan["n_c"] == pytest.approx(n_c)
        assert list(plan["old_classes"]) == list(old)
        for category_id, (n_k, quota) in old.items():
            assert plan["old_classes"][category_id]["n_k"] == pytest.approx(n_k)
            assert plan["old_classes"][category_id]["quota"] == quota
        assert plan["new_category_ids"] == phases["groups"][phase]
    with pytest.raises(ValueError, match="phase 0"):
        division.make_replay_plan(phases, 0, counts, images, rule)


def test_quota_rules():
    assert division.replay_quota(3.0, 1.2, "round") == 2  # 2.5 rounds to even
    assert division.replay_quota(3.5, 1.0, "round") == 4
    assert division.replay_quota(1.0, 10.0, "round") == 1  # at least one
    assert division.replay_quota(6.0, 2.0, "ceil") == 3
    with pytest.raises(ValueError, match="REPLAY_QUOTA_RULE"):
        division.replay_quota(1.0, 1.0, "floor")


def test_replay_quotas_by_label_checks_the_phase():
    plan = {"n_c": 3.0, "old_classes": {"9": {"n_k": 1.2, "quota": 3},
                                        "2": {"n_k": 4.0, "quota": 1}}}
    to_label = {9: 1, 2: 2, 5: 3, 3: 4}
    assert division.replay_quotas_by_label(plan, to_label, 2) == {1: 3, 2: 1}
    with pytest.raises(ValueError, match="plan.json: has no quota for old labels \\[3, 4\\]"):
        division.replay_quotas_by_label(plan, to_label, 4, source="plan.json")
    with pytest.raises(ValueError, match="old class 2 is not among the 1 old classes"):
        division.replay_quotas_by_label(plan, to_label, 1)


# ---------------------------------------------------------------------------- CLI
def _cli_main():
    spec = importlib.util.spec_from_file_location(
        "lst_prepare", os.path.join(REPO_ROOT, "tools", "lst_prepare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _read_tree(directory):
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(root, name)) as f:
                files[os.path.relpath(os.path.join(root, name), directory)] = f.read()
    return files


def test_cli_writes_the_phase_files(tmp_path, train_json):
    out = tmp_path / "experiment"
    done = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "lst_prepare.py"),
         "--train-json", train_json, "--base", "2", "--phase-size", "2",
         "--output-dir", str(out), "--quota-rule", "round"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")),
    )
    assert done.returncode == 0, done.stderr
    assert "phase 0: 2 categories, 4..6 training instances" in done.stdout
    assert "phase 3: 1 categories, 0..0 training instances" in done.stdout
    assert sorted(_read_tree(str(out))) == [
        "phase_1/replay_plan.json", "phase_2/replay_plan.json", "phase_3/replay_plan.json",
        "phases.json"]
    phases = division.load_phases(str(out / "phases.json"))
    assert phases["groups"] == [[9, 2], [5, 3], [1, 8], [7]]
    for phase, (n_c, old) in EXPECTED_PLANS["round"].items():
        plan = division.load_replay_plan(str(out / "phase_{}".format(phase) / "replay_plan.json"))
        assert plan["n_c"] == pytest.approx(n_c)
        assert {c: v["quota"] for c, v in plan["old_classes"].items()} == \
            {c: quota for c, (_, quota) in old.items()}


def test_cli_is_idempotent_and_refuses_to_change_finished_phases(tmp_path, train_json, capsys):
    main = _cli_main()
    out = str(tmp_path / "experiment")
    args = ["--train-json", train_json, "--base", "2", "--phase-size", "2", "--output-dir", out]
    main(args)
    written = _read_tree(out)
    main(args)
    assert _read_tree(out) == written

    with pytest.raises(SystemExit, match="phases.json already exists with different content.*"
                                         "another output directory"):
        main(["--train-json", train_json, "--base", "3", "--phase-size", "2", "--output-dir", out])
    with pytest.raises(SystemExit, match="replay_plan.json already exists with different"):
        main(args + ["--quota-rule", "round"])
    assert _read_tree(out) == written

    with pytest.raises(SystemExit, match="base size 7"):
        main(["--train-json", train_json, "--base", "7", "--phase-size", "2",
              "--output-dir", str(tmp_path / "other")])
    assert not os.path.exists(str(tmp_path / "other"))


def test_share_phase0_copies_a_finished_phase_0_into_an_experiment_not_started(tmp_path, train_json):
    base = Experiment(str(tmp_path / "base"))
    base.prepare(train_json, 2, 2)
    variant = Experiment(str(tmp_path / "variant"))
    assert not variant.share_phase0(base.root)  # phase 0 of the base is not finished
    assert not os.path.exists(variant.phases_file)

    os.makedirs(os.path.dirname(base.phase(0).metrics("val")))
    for path, text in [(base.phase(0).model_final, "weights"), (base.phase(0).metrics("val"), "{}")]:
        with open(path, "w") as f:
            f.write(text)
    assert variant.share_phase0(base.root)
    assert variant.phase(0).state == "finished" and variant.phase(1).state == "not started"
    assert _read_tree(variant.phase(0).dir) == _read_tree(base.phase(0).dir)
    assert variant.load_phases() == base.load_phases()

    with open(variant.phase(0).model_final, "w") as f:
        f.write("trained further")
    assert not variant.share_phase0(base.root)  # started: never overwritten
    with open(variant.phase(0).model_final) as f:
        assert f.read() == "trained further"


def test_share_phase0_into_a_divided_experiment_copies_phase_0_alone_for_the_same_base_classes(tmp_path, train_json):
    base = Experiment(str(tmp_path / "base"))
    base.prepare(train_json, 2, 2)
    os.makedirs(os.path.dirname(base.phase(0).metrics("val")))
    for path, text in [(base.phase(0).model_final, "weights"), (base.phase(0).metrics("val"), "{}")]:
        with open(path, "w") as f:
            f.write(text)
    other_phase_size = Experiment(str(tmp_path / "phase_size_1"))
    other_phase_size.prepare(train_json, 2, 1)
    division = other_phase_size.load_phases()
    assert division["groups"] != base.load_phases()["groups"]  # another division, the same C_0

    assert other_phase_size.share_phase0(base.root)
    assert _read_tree(other_phase_size.phase(0).dir) == _read_tree(base.phase(0).dir)
    assert other_phase_size.load_phases() == division  # its own division is kept
    assert not os.path.exists(other_phase_size.phase(0).dir + ".partial")
    assert not other_phase_size.share_phase0(base.root)  # phase 0 finished: nothing to copy

    other_base = Experiment(str(tmp_path / "base_3"))
    other_base.prepare(train_json, 3, 2)
    with pytest.raises(ValueError, match="different base classes C_0") as error:
        other_base.share_phase0(base.root)
    assert other_base.phases_file in str(error.value) and base.phases_file in str(error.value)
    assert not os.path.exists(other_base.phase(0).dir)


def test_final_metrics_is_the_last_phases_evaluation_or_a_path_that_does_not_exist(tmp_path, train_json):
    experiment = Experiment(str(tmp_path / "experiment"))
    not_finished = os.path.join(experiment.root, "not_finished")
    assert experiment.final_metrics_file == not_finished  # not started: no phases.json
    assert experiment.final_phase_dir == not_finished
    experiment.prepare(train_json, 2, 2)
    last = experiment.last_phase
    assert last >= 1 and experiment.final_phase_dir == experiment.phase(last).dir
    for phase in range(last + 1):  # every phase but the last finished: still not finished
        assert experiment.final_metrics_file == not_finished
        os.makedirs(os.path.dirname(experiment.phase(phase).metrics("val")))
        with open(experiment.phase(phase).metrics("val"), "w") as f:
            f.write("{}")
    assert experiment.final_metrics_file == experiment.phase(last).metrics("val")
    assert not os.path.exists(not_finished)

    def final_metrics_printed(named_as):
        tool = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "lst_experiment.py"), named_as,
                               "final-metrics"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
        assert tool.returncode == 0, tool.stderr
        return tool.stdout.strip()

    assert final_metrics_printed(experiment.root) == experiment.phase(last).metrics("val")
    # named by a relative path: printed relative to the working folder
    assert final_metrics_printed("experiment") == os.path.join(
        "experiment", os.path.relpath(experiment.phase(last).metrics("val"), experiment.root))


# ---------------------------------------------------------------------------- datasets and config
@pytest.fixture(scope="module")
def phase_catalog(tmp_path_factory):
    directory = tmp_path_factory.mktemp("phase_data")
    fixture = write_lvis_fixture(str(directory), version="v1", num_images=24)
    catalog = write_paths_catalog(str(directory / "paths_catalog.py"),
                                  {"lvis_fixture": ("LVISDataset", fixture)})
    Experiment(str(directory / "experiment")).prepare(fixture.ann_file, 3, 2)
    return catalog, str(directory / "experiment"), fixture


def phase_cfg(phase_catalog, phase, *opts):
    catalog, experiment, _ = phase_catalog
    phases = division.load_phases(os.path.join(experiment, "phases.json"))
    config = cfg.clone()
    config.merge_from_list([
        "PATHS_CATALOG", catalog, "OUTPUT_DIR", experiment, "SEED", 0,
        "DATASETS.TRAIN", ("lvis_fixture",), "DATASETS.TEST", ("lvis_fixture",),
        "DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MAX_SIZE_TRAIN", 64,
        "INPUT.MIN_SIZE_TEST", 32, "INPUT.MAX_SIZE_TEST", 64,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 6, "TEST.IMS_PER_BATCH", 2,
        "MODEL.LST.PHASES_FILE", os.path.join(experiment, "phases.json"),
        "MODEL.LST.PHASE", phase,
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", ResolvedPhase.from_phases(phases, phase).num_classes,
        "MODEL.LST.NUM_OLD_CLASSES", ResolvedPhase.from_phases(phases, phase).num_old_classes,
    ] + list(opts))
    return config, phases


def phase_options(config):
    """make_data_loader's options of a phase config, as tools/train_net.py passes them."""
    return ResolvedPhase.from_config(config).data_loader_options(config)


@pytest.mark.parametrize("phase", [0, 1])
def test_loaders_use_the_phase_categories(phase_catalog, phase):
    config, phases = phase_cfg(phase_catalog, phase)
    seen = ResolvedPhase.from_phases(phases, phase).seen
    train = make_data_loader(config, is_train=True, **phase_options(config))
    (test,) = make_data_loader(config, is_train=False, **phase_options(config))
    for dataset in (train.dataset, test.dataset):
        assert list(dataset.json_category_id_to_contiguous_id) == seen
        assert list(dataset.json_category_id_to_contiguous_id.values()) == \
            list(range(1, len(seen) + 1))
    _, targets, _ = next(iter(train))
    for target in targets:
        assert 1 <= target.get_field("labels").min() and \
            target.get_field("labels").max() <= len(seen)


def test_num_classes_must_match_the_phase(phase_catalog):
    config, _ = phase_cfg(phase_catalog, 1, "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 81)
    with pytest.raises(ValueError, match="NUM_CLASSES is 81 but phase 1 .* set MODEL.ROI_BOX_HEAD.NUM_CLASSES to 6"):
        ResolvedPhase.from_config(config)


@pytest.mark.parametrize("phase, groups", [(0, ["all"]), (1, ["old", "new", "all"])])
def test_lvis_evaluation_options_restrict_to_the_phase(phase_catalog, phase, groups):
    config, phases = phase_cfg(phase_catalog, phase)
    resolved = ResolvedPhase.from_config(config)
    options = lvis_evaluation_options(config, **resolved.evaluation_options())
    seen = resolved.seen
    assert options["category_ids"] == seen
    assert list(options["category_groups"]) == groups
    assert options["category_groups"]["all"] == seen
    if phase:
        assert options["category_groups"]["old"] == phases["groups"][0]
        assert options["category_groups"]["new"] == phases["groups"][1]


# ---------------------------------------------------------------------------- evaluation
@pytest.fixture
def reference_subset(tmp_path, monkeypatch):
    """lvis-api's LVISEval after run(), evaluating only ``cat_ids`` (its params.cat_ids)."""
    run_all = lvis_api(tmp_path, monkeypatch)

    def run(gt, results, iou_type, cat_ids):
        import lvis.eval

        original = lvis.eval.LVISEval.evaluate

        def evaluate_subset(evaluator):
            evaluator.params.cat_ids = list(cat_ids)
            return original(evaluator)

        monkeypatch.setattr(lvis.eval.LVISEval, "evaluate", evaluate_subset)
        evaluator = run_all(gt, results, iou_type)
        return evaluator
    return run


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed, order", [(20, "sorted"), (21, "shuffled")])
def test_category_subset_equals_lvis_api(tmp_path, reference_subset, iou_type, seed, order):
    gt, results = make_case(seed=seed)
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    subset = [int(c) for c in rng.choice(cat_ids, len(cat_ids) // 2, replace=False)]
    subset = sorted(subset) if order == "sorted" else subset
    assert any(r["category_id"] not in subset for r in results)

    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    fast = FastLVISEval(LVIS(str(path)), results, iou_type)
    fast.params.cat_ids = subset
    fast.run()
    ref = reference_subset(gt, results, iou_type, subset)
    assert list(ref.params.cat_ids) == subset
    np.testing.assert_array_equal(fast.eval["precision"], ref.eval["precision"])
    np.testing.assert_array_equal(fast.eval["recall"], ref.eval["recall"])
    for key in SUMMARY_KEYS:
        assert abs(fast.results[key] - ref.results[key]) <= 1e-6, key
    assert fast.freq_groups == ref.freq_groups


def test_category_subset_rejects_unknown_ids(tmp_path):
    gt, results = make_case(seed=22, num_images=4)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    fast = FastLVISEval(LVIS(str(path)), results, "bbox")
    fast.params.cat_ids = [gt["categories"][0]["id"], 10 ** 6]
    with pytest.raises(ValueError, match="\\[1000000\\] that are not categories"):
        fast.run()


def test_evaluate_with_category_ids(tmp_path, reference_subset):
    gt, _ = make_case(seed=23, num_images=6)
    dataset = _lvis_dataset(tmp_path, gt)
    predictions = _predictions_for(gt, dataset, np.random.default_rng(2), extra=20)
    cat_ids = [c["id"] for c in gt["categories"]]
    seen = cat_ids[: len(cat_ids) // 2]
    groups = {"old": seen[:4], "new": seen[4:], "all": seen}
    metrics, results = evaluate(dataset, predictions, None, box_only=False, iou_types=("bbox",),
                                category_groups=groups, category_ids=seen)
    ref = reference_subset(gt, results["bbox"], "bbox", sorted(seen))
    for key in SUMMARY_KEYS:
        assert abs(metrics["bbox"][key] - ref.results[key]) <= 1e-6, key
    assert sorted(metrics["bbox"]["per_category_AP"]) == sorted(seen)
    for name, ids in groups.items():
        assert abs(metrics["bbox"]["groups"][name] - ap_of_categories(ref, ids)) <= 1e-9
