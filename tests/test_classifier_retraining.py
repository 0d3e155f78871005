"""Decoupled classifier re-training (cRT, MODEL.CRT): only the box classifier trains, it starts
re-initialised from the weights alone of the trained detector, an interrupted cRT run resumes
without re-initialising, and its configs merge and build."""
import os

import pytest
import torch

from fixtures_training import (
    REPO_ROOT,
    TINY_CONFIG,
    check_ran,
    load_checkpoint,
    max_weight_difference,
    run_tool,
    seed_everything,
    tiny_cfg,
)
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.config.config_file import merge_config_file
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.box_head.classifier_retraining import (
    freeze_all_but_classifier,
    start_classifier_retraining,
)
from maskrcnn_benchmark.solver import make_optimizer
from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer

CLASSIFIER_KEYS = {"roi_heads.box.predictor.cls_score.weight", "roi_heads.box.predictor.cls_score.bias"}


def trainable_names(model):
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


@pytest.mark.parametrize("path,num_classes", [
    ("configs/synthetic/e2e_mask_rcnn_R_18_FPN_cpu_crt.yaml", 65),
    ("configs/synthetic/budget_1000/e2e_mask_rcnn_R_18_FPN_cpu_crt.yaml", 65),
    ("configs/lvis/e2e_mask_rcnn_R_50_FPN_1x_lvis_v0.5_crt.yaml", 1231),
    ("configs/lvis/e2e_mask_rcnn_R_50_FPN_1x_lvis_v1_crt.yaml", 1204),
])
def test_crt_configs_build_a_model_whose_only_trainable_part_is_the_classifier(path, num_classes):
    config = default_cfg.clone()
    merge_config_file(config, os.path.join(REPO_ROOT, path))
    config.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", ""])
    assert config.MODEL.CRT.ENABLED and config.MODEL.CRT.REINIT_CLASSIFIER
    assert config.DATALOADER.SAMPLER == "ClassAwareSampler"
    model = build_detection_model(config)
    freeze_all_but_classifier(model)
    assert trainable_names(model) == CLASSIFIER_KEYS
    assert model.roi_heads.box.predictor.cls_score.weight.shape[0] == num_classes
    optimizer = make_optimizer(config, model)
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 2


def test_the_cosine_classifier_trains_with_its_learnable_scale():
    config = default_cfg.clone()
    merge_config_file(config, os.path.join(REPO_ROOT, "configs/synthetic/e2e_mask_rcnn_R_18_FPN_cpu_modified_backbone.yaml"))
    model = build_detection_model(config)
    freeze_all_but_classifier(model)
    assert trainable_names(model) == {"roi_heads.box.predictor.cls_score.weight", "roi_heads.box.predictor.scale_cls"}


@pytest.mark.parametrize("reinit", [True, False])
def test_start_takes_the_weights_alone_and_draws_a_new_classifier(tmp_path, reinit):
    cfg = tiny_cfg(tmp_path / "catalog.py", tmp_path / "crt", "MODEL.CRT.ENABLED", True,
                   "MODEL.CRT.REINIT_CLASSIFIER", reinit, "MODEL.WEIGHT", str(tmp_path / "trained.pth"))
    seed_everything(1)
    trained_model = build_detection_model(cfg)
    with torch.no_grad():
        trained_model.roi_heads.box.predictor.cls_score.bias.fill_(0.5)
    trained = trained_model.state_dict()
    torch.save({"model": trained, "iteration": 50, "optimizer": {"state": {}, "param_groups": []}},
               tmp_path / "trained.pth")

    seed_everything(2)
    model = build_detection_model(cfg)
    freeze_all_but_classifier(model)
    optimizer = make_optimizer(cfg, model)
    checkpointer = DetectronCheckpointer(cfg, model, optimizer, save_dir=str(tmp_path / "crt"))
    start_classifier_retraining(cfg, model, checkpointer)

    state = model.state_dict()
    for key in trained:
        if key not in CLASSIFIER_KEYS:
            assert torch.equal(state[key], trained[key]), key
    weight = state["roi_heads.box.predictor.cls_score.weight"]
    bias = state["roi_heads.box.predictor.cls_score.bias"]
    if reinit:
        assert not torch.equal(weight, trained["roi_heads.box.predictor.cls_score.weight"])
        assert weight.std().item() == pytest.approx(0.01, rel=0.2) and torch.all(bias == 0)
    else:
        assert torch.equal(weight, trained["roi_heads.box.predictor.cls_score.weight"]) and torch.all(bias == 0.5)
    assert len(optimizer.param_groups) == 2  # the trained run's optimizer was not taken


def test_crt_without_model_weight_says_what_to_set(tmp_path):
    cfg = tiny_cfg(tmp_path / "catalog.py", tmp_path / "crt", "MODEL.CRT.ENABLED", True)
    model = build_detection_model(cfg)
    with pytest.raises(ValueError, match="MODEL.WEIGHT"):
        start_classifier_retraining(cfg, model, DetectronCheckpointer(cfg, model, save_dir=str(tmp_path / "crt")))


@pytest.mark.slow
def test_crt_run_changes_only_the_classifier_and_resumes_without_reinitialising(workspace):
    trained_dir, crt_dir = workspace["dir"] / "crt_from", workspace["dir"] / "crt"
    common = ["--config-file", TINY_CONFIG, "--skip-test", "PATHS_CATALOG", workspace["catalog"]]
    check_ran(run_tool("train_net.py", [*common, "OUTPUT_DIR", trained_dir, "SOLVER.MAX_ITER", 3], workspace["env"]))
    trained = load_checkpoint(trained_dir / "model_final.pth")["model"]

    crt_args = [*common, "OUTPUT_DIR", crt_dir, "MODEL.CRT.ENABLED", True, "MODEL.WEIGHT", trained_dir / "model_final.pth",
                "DATALOADER.SAMPLER", "ClassAwareSampler", "SOLVER.WARMUP_ITERS", 0]
    first = run_tool("train_net.py", [*crt_args, "SOLVER.MAX_ITER", 2], workspace["env"])
    check_ran(first)
    assert "the box classifier re-initialised" in first.stdout + first.stderr
    after_two = load_checkpoint(crt_dir / "model_final.pth")
    assert after_two["iteration"] == 2  # counted from 0, not from the trained run's 3
    frozen = {k: v for k, v in after_two["model"].items() if k not in CLASSIFIER_KEYS}
    assert max_weight_difference(frozen, {k: trained[k] for k in frozen}) == 0
    classifier = "roi_heads.box.predictor.cls_score.weight"
    assert (after_two["model"][classifier] - trained[classifier]).abs().max() > 1e-4

    resumed = run_tool("train_net.py", [*crt_args, "SOLVER.MAX_ITER", 4], workspace["env"])
    check_ran(resumed)
    assert "re-initialised" not in resumed.stdout + resumed.stderr
    final = load_checkpoint(crt_dir / "model_final.pth")
    assert final["iteration"] == 4
    assert max_weight_difference({k: final["model"][k] for k in frozen}, frozen) == 0
