"""NorCal post-hoc calibration (Pan et al., NeurIPS 2021) against a hand computation, and its
effect in the box post-processor and run through the config, and the choice of gamma
(engine.inference.choose_calibration_gamma, tools/test_net.py --calibration-gammas)."""
import argparse
import importlib.util
import json
import os

import pytest
import torch
import torch.nn.functional as F

from fixtures_training import (
    REPO_ROOT,
    TINY_CONFIG,
    check_ran,
    run_tool,
    tool_env,
    write_fixture_catalog,
    write_seed_env_module,
)
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.engine import inference
from maskrcnn_benchmark.modeling.roi_heads.box_head.calibration import (
    calibrate_box_head,
    training_image_counts,
    norcal_factors,
    norcal_scores,
)
from maskrcnn_benchmark.modeling.roi_heads.box_head.inference import PostProcessor
from maskrcnn_benchmark.structures.bounding_box import BoxList


def test_scores_match_a_hand_computation():
    # one RoI, background 0.4, classes with 1, 4 and 100 training images, gamma 0.5
    prob = torch.tensor([[0.4, 0.1, 0.2, 0.3]])
    factors = norcal_factors([1, 4, 100], 0.5)
    torch.testing.assert_close(factors, torch.tensor([1.0, 1.0, 0.5, 0.1]))
    # foreground / N^0.5: 0.1, 0.1, 0.03; background 0.4 kept; total 0.63
    expected = torch.tensor([[0.4, 0.1, 0.1, 0.03]]) / 0.63
    torch.testing.assert_close(norcal_scores(prob, factors), expected)
    torch.testing.assert_close(norcal_scores(prob, factors, renorm=False),
                               torch.tensor([[0.4, 0.1, 0.1, 0.03]]))


def test_ranking_within_a_class_and_background():
    generator = torch.Generator().manual_seed(0)
    prob = F.softmax(3 * torch.randn(200, 6, generator=generator), dim=1)
    factors = norcal_factors([1, 3, 30, 300, 3000], 0.7)
    unnormalised = norcal_scores(prob, factors, renorm=False)
    calibrated = norcal_scores(prob, factors)
    for j in range(1, 6):
        # a per-class rescaling keeps each class's order of the RoIs
        assert torch.equal(torch.argsort(unnormalised[:, j], stable=True),
                           torch.argsort(prob[:, j], stable=True))
    # NorCal's background: never rescaled; every RoI's scores sum to 1 after renormalisation
    torch.testing.assert_close(calibrated.sum(1), torch.ones(200))
    torch.testing.assert_close(calibrated[:, 0] / calibrated[:, 1:].sum(1),
                               prob[:, 0] / (prob[:, 1:] * factors[1:]).sum(1))
    # within a RoI, foreground ratios change by the factors only
    torch.testing.assert_close(calibrated[:, 2] / calibrated[:, 5],
                               (prob[:, 2] / prob[:, 5]) * (factors[2] / factors[5]))
    with pytest.raises(ValueError, match="labels \\[2\\]"):
        norcal_factors([4, 0, 3], 0.5)


def test_post_processor_scores_are_calibrated_and_keep_the_class_order():
    generator = torch.Generator().manual_seed(1)
    num_rois, num_classes = 12, 4
    x1 = torch.arange(num_rois, dtype=torch.float32) * 20
    boxes = torch.stack([x1, torch.zeros(num_rois), x1 + 9, torch.full((num_rois,), 9.0)], 1)
    logits = torch.randn(num_rois, num_classes, generator=generator)
    deltas = torch.zeros(num_rois, 4 * num_classes)
    post_processor = PostProcessor(score_thresh=0.0, nms=0.5, detections_per_img=0)
    (plain,) = post_processor((logits, deltas), [BoxList(boxes, (300, 20))])
    post_processor.class_factors = norcal_factors([2, 20, 200], 0.5)
    post_processor.calibration_renorm = False
    (calibrated,) = post_processor((logits, deltas), [BoxList(boxes, (300, 20))])
    # disjoint boxes, no threshold: every (RoI, class) both times, same order, scores rescaled
    assert torch.equal(plain.get_field("labels"), calibrated.get_field("labels"))
    torch.testing.assert_close(calibrated.bbox, plain.bbox)
    factor = post_processor.class_factors[plain.get_field("labels")]
    torch.testing.assert_close(calibrated.get_field("scores"), plain.get_field("scores") * factor)


def test_config_sets_counts_by_training_images_of_each_label(tmp_path):
    train = {"images": [{"id": i, "width": 50, "height": 50, "file_name": "{}.jpg".format(i)}
                        for i in (1, 2, 3)],
             "categories": [{"id": c, "name": str(c)} for c in (5, 7, 9)],
             "annotations": [{"id": k, "image_id": i, "category_id": c, "bbox": [1, 1, 10, 10],
                              "area": 100.0, "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]]}
                             for k, (i, c) in enumerate([(1, 5), (1, 5), (2, 5), (3, 5), (1, 7),
                                                         (2, 9), (3, 9)])]}
    # label order of an LST phase: any order of the categories
    label_to_category = {1: 9, 2: 5, 3: 7}
    assert training_image_counts(train, label_to_category) == [2, 3, 1]

    class Box(object):
        post_processor = PostProcessor()

    class Heads(object):
        box = Box()

    class Model(object):
        roi_heads = Heads()

    class Dataset(object):
        contiguous_category_id_to_json_id = label_to_category

    cfg = default_cfg.clone()
    cfg.merge_from_list(["TEST.CALIBRATION.GAMMA", 1.0, "TEST.CALIBRATION.RENORM", False])
    model = Model()
    calibrate_box_head(model, cfg, Dataset(), train)
    torch.testing.assert_close(model.roi_heads.box.post_processor.class_factors,
                               torch.tensor([1.0, 1 / 2, 1 / 3, 1.0]))
    assert model.roi_heads.box.post_processor.calibration_renorm is False
    cfg.merge_from_list(["TEST.CALIBRATION.GAMMA", 0.0])
    calibrate_box_head(model, cfg, Dataset(), None)
    assert model.roi_heads.box.post_processor.class_factors is None
    cfg.merge_from_list(["TEST.CALIBRATION.GAMMA", 0.5])
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        calibrate_box_head(model, cfg, Dataset(), None)
    # sigmoid-scored classifiers: a per-class rescaling only
    for loss in ("federated", "eqlv2"):
        sigmoid_cfg = cfg.clone()
        sigmoid_cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS", loss, "TEST.CALIBRATION.RENORM", True])
        with pytest.raises(ValueError, match="TEST.CALIBRATION.RENORM False"):
            calibrate_box_head(model, sigmoid_cfg, Dataset(), train)
        sigmoid_cfg.merge_from_list(["TEST.CALIBRATION.RENORM", False])
        calibrate_box_head(model, sigmoid_cfg, Dataset(), train)
        assert model.roi_heads.box.post_processor.class_factors is not None


def test_gamma_choice_evaluates_the_grid_and_ties_go_to_the_smaller_gamma(monkeypatch, tmp_path):
    segm_ap = {0.0: 0.2, 0.25: 0.3, 0.5: 0.3, 1.0: 0.1}  # 0.25 and 0.5 tie at the best
    evaluated = []

    def fake_run_test(cfg, model, distributed, **options):
        evaluated.append((cfg.TEST.CALIBRATION.GAMMA, cfg.OUTPUT_DIR, options))
        gamma = cfg.TEST.CALIBRATION.GAMMA
        return [({"bbox": {"AP": 1.0 - gamma}, "segm": {"AP": segm_ap[gamma]}}, [])]

    monkeypatch.setattr(inference, "run_test", fake_run_test)
    cfg = default_cfg.clone()
    cfg.merge_from_list(["MODEL.MASK_ON", True, "DATASETS.TEST", ("train_subset",),
                         "OUTPUT_DIR", str(tmp_path)])
    best = inference.choose_calibration_gamma(cfg, None, False, [1.0, 0.5, 0.25, 0.0, 0.5],
                                              category_ids=[3, 1])
    assert best == 0.25
    assert [g for g, _, _ in evaluated] == [0.0, 0.25, 0.5, 1.0]  # each gamma once
    assert len({directory for _, directory, _ in evaluated}) == 4
    assert all(options == {"category_ids": [3, 1]} for _, _, options in evaluated)
    written = json.loads((tmp_path / "calibration_gamma.json").read_text())
    assert written == {"metric": "segm AP", "dataset": "train_subset", "gamma": 0.25,
                       "AP": {repr(g): v for g, v in segm_ap.items()}}
    cfg.merge_from_list(["DATASETS.TEST", ("a", "b")])
    with pytest.raises(ValueError, match="one DATASETS.TEST"):
        inference.choose_calibration_gamma(cfg, None, False, [0.0])


@pytest.mark.slow
def test_test_net_chooses_gamma_by_the_mask_ap_of_its_metrics_files(tmp_path):
    # 32 images: every category has training images (NorCal's N_j > 0)
    catalog, _ = write_fixture_catalog(tmp_path, num_images=32, seed=1)
    env = tool_env(write_seed_env_module(tmp_path), threads=1)
    output_dir = tmp_path / "calibration_run"
    # 1e-12 gives the factors of 0 in float32: a tie, which goes to 0
    gammas = [1.0, 1e-12, 0.0, 0.5]
    result = run_tool("test_net.py", [
        "--config-file", TINY_CONFIG, "--calibration-gammas", ",".join(map(repr, gammas)),
        "PATHS_CATALOG", catalog, "OUTPUT_DIR", output_dir, "DATASETS.TEST", '("fixture_train",)',
        # the random weights' detections, all of them, so that AP is above 0 and depends on gamma
        "MODEL.ROI_HEADS.SCORE_THRESH", "0.0", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "0"], env)
    check_ran(result)
    segm_ap = {}
    for gamma in gammas:
        metrics_file = (output_dir / "calibration" / "gamma_{!r}".format(gamma) / "inference"
                        / "fixture_train" / "metrics.json")
        segm_ap[gamma] = json.loads(metrics_file.read_text())["segm"]["AP"]
    assert segm_ap[1e-12] == segm_ap[0.0]
    assert len(set(segm_ap.values())) > 1, "every gamma gave the same AP: the test shows nothing"
    best = max(sorted(segm_ap), key=lambda g: (segm_ap[g], -g))
    written = json.loads((output_dir / "calibration_gamma.json").read_text())
    assert written["gamma"] == best
    assert written["metric"] == "segm AP"
    assert written["AP"] == {repr(g): segm_ap[g] for g in sorted(segm_ap)}
    assert "TEST.CALIBRATION.GAMMA {!r}".format(best) in result.stdout


def test_gamma_grid_argument_is_comma_separated_and_checked():
    spec = importlib.util.spec_from_file_location("test_net_under_test", os.path.join(REPO_ROOT, "tools", "test_net.py"))
    test_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_net)
    assert test_net.calibration_gammas("0,0.25,1e-3") == [0.0, 0.25, 0.001]
    with pytest.raises(argparse.ArgumentTypeError, match=">= 0"):
        test_net.calibration_gammas("0,-0.5")
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated"):
        test_net.calibration_gammas("0 0.5")
