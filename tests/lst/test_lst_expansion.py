"""Network expansion between LST phases (paper §3.2): the box predictor grows, the old classes keep
their rows (so the expanded model scores them exactly as before), the new rows follow the stated
initialisation, everything else is carried over; and tools/lst_expand.py around it."""
import os
from collections import OrderedDict

import pytest
import torch

from fixtures_training import check_ran, load_checkpoint, run_tool, tool_env
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.lst.expansion import expand_box_predictor
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer
from maskrcnn_benchmark.utils.model_serialization import load_state_dict

LST_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "configs", "tests", "e2e_mask_rcnn_R_18_FPN_tiny_cpu_lst_heads.yaml",
)
PREDICTOR = "roi_heads.box.predictor."
OLD_CLASSES, NEW_CLASSES = 7, 11


def build_model(num_classes, *opts, seed=0):
    cfg = default_cfg.clone()
    cfg.merge_from_file(LST_CONFIG)
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.NUM_CLASSES", num_classes, *opts])
    torch.manual_seed(seed)
    return build_detection_model(cfg).eval()


def box_head_outputs(model):
    """(class logits, box deltas, transferred mask filters) of fixed boxes on a fixed image."""
    images = to_image_list([torch.randn(3, 128, 160, generator=torch.Generator().manual_seed(1))], 32)
    boxes = [BoxList(torch.tensor([[10.0, 10.0, 60.0, 70.0], [70.0, 20.0, 150.0, 120.0], [0.0, 0.0, 159.0, 127.0]]),
                     (160, 128))]
    with torch.no_grad():
        features = model.backbone(images.tensors)
        box_head = model.roi_heads.box
        logits, deltas = box_head.predictor(box_head.feature_extractor(features, boxes))
        mask_filters = model.roi_heads.bbox2mask(box_head.predictor.cls_score.weight)
    return logits, deltas, mask_filters


@pytest.mark.parametrize("prefix", ["", "module."])
def test_expanded_model_scores_the_old_classes_exactly_as_before(prefix):
    old_model = build_model(OLD_CLASSES)
    state_dict = OrderedDict((prefix + key, value) for key, value in old_model.state_dict().items())
    expanded = expand_box_predictor(state_dict, NEW_CLASSES, generator=torch.Generator().manual_seed(0))
    new_model = build_model(NEW_CLASSES, seed=1)
    load_state_dict(new_model, expanded)  # shape-checked

    old_logits, old_deltas, old_filters = box_head_outputs(old_model)
    new_logits, new_deltas, new_filters = box_head_outputs(new_model)
    assert new_logits.shape == (3, NEW_CLASSES) and new_deltas.shape == (3, 4 * NEW_CLASSES)
    torch.testing.assert_close(new_logits[:, :OLD_CLASSES], old_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(new_deltas[:, : 4 * OLD_CLASSES], old_deltas, rtol=0, atol=1e-7)
    torch.testing.assert_close(new_filters[:OLD_CLASSES], old_filters, rtol=0, atol=1e-7)
    assert not torch.allclose(new_logits[:, OLD_CLASSES:], torch.zeros(3, NEW_CLASSES - OLD_CLASSES))


def synthetic_state_dict(num_classes=5, dim=1024, prefix="module."):
    generator = torch.Generator().manual_seed(0)
    return OrderedDict(
        [
            (prefix + "backbone.body.stem.conv1.weight", torch.randn(8, 3, 7, 7, generator=generator)),
            (prefix + PREDICTOR + "scale_cls", torch.tensor([10.0])),
            (prefix + PREDICTOR + "cls_score.weight", torch.randn(num_classes, dim, generator=generator)),
            (prefix + PREDICTOR + "bbox_pred.weight", torch.randn(4 * num_classes, dim, generator=generator)),
            (prefix + PREDICTOR + "bbox_pred.bias", torch.randn(4 * num_classes, generator=generator)),
            (prefix + "roi_heads.bbox2mask.0.weight", torch.randn(dim, dim, generator=generator)),
            (prefix + "roi_heads.mask.predictor.MLP_mask.weight", torch.randn(16, 32, generator=generator)),
        ]
    )


def test_new_rows_have_the_stated_statistics_and_old_rows_are_copied():
    state_dict = synthetic_state_dict()
    expanded = expand_box_predictor(state_dict, 405, std_cls=0.01, std_bbox=0.001,
                                    generator=torch.Generator().manual_seed(0))
    p = "module." + PREDICTOR
    cls_weight, bbox_weight, bbox_bias = (expanded[p + name] for name in
                                          ("cls_score.weight", "bbox_pred.weight", "bbox_pred.bias"))
    assert cls_weight.shape == (405, 1024) and bbox_weight.shape == (1620, 1024) and bbox_bias.shape == (1620,)
    assert torch.equal(cls_weight[:5], state_dict[p + "cls_score.weight"])
    assert torch.equal(bbox_weight[:20], state_dict[p + "bbox_pred.weight"])
    assert torch.equal(bbox_bias[:20], state_dict[p + "bbox_pred.bias"])
    for new_rows, std in ((cls_weight[5:], 0.01), (bbox_weight[20:], 0.001)):
        n = new_rows.numel()
        assert abs(new_rows.std().item() / std - 1) < 0.01
        assert abs(new_rows.mean().item()) < 5 * std / n ** 0.5
    assert torch.count_nonzero(bbox_bias[20:]) == 0


def test_everything_but_the_predictor_rows_is_carried_over_untouched():
    state_dict = synthetic_state_dict()
    expanded = expand_box_predictor(state_dict, 9)
    assert list(expanded) == list(state_dict)
    grown = {"cls_score.weight", "bbox_pred.weight", "bbox_pred.bias"}
    for key, value in state_dict.items():
        if key.rsplit(PREDICTOR, 1)[-1] not in grown:
            assert expanded[key] is value, key


def test_a_classifier_bias_grows_with_zeros():
    model = build_model(OLD_CLASSES, "MODEL.ROI_BOX_HEAD.PREDICTOR", "FPNPredictor",
                        "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPN2MLPFeatureExtractor",
                        "MODEL.ROI_MASK_HEAD.USE_BBOX2MASK", False, "MODEL.ROI_MASK_HEAD.USE_MLPMASK", False)
    state_dict = model.state_dict()
    expanded = expand_box_predictor(state_dict, NEW_CLASSES)
    bias = expanded[PREDICTOR + "cls_score.bias"]
    assert bias.shape == (NEW_CLASSES,)
    assert torch.equal(bias[:OLD_CLASSES], state_dict[PREDICTOR + "cls_score.bias"])
    assert torch.count_nonzero(bias[OLD_CLASSES:]) == 0


def test_class_agnostic_box_regression_is_left_as_it_is():
    old_model = build_model(OLD_CLASSES, "MODEL.CLS_AGNOSTIC_BBOX_REG", True)
    state_dict = old_model.state_dict()
    expanded = expand_box_predictor(state_dict, NEW_CLASSES)
    assert expanded[PREDICTOR + "bbox_pred.weight"] is state_dict[PREDICTOR + "bbox_pred.weight"]
    load_state_dict(build_model(NEW_CLASSES, "MODEL.CLS_AGNOSTIC_BBOX_REG", True), expanded)


def test_two_class_checkpoints_need_to_say_whether_box_regression_is_class_agnostic():
    state_dict = synthetic_state_dict(num_classes=2, dim=8)
    with pytest.raises(ValueError, match="cls_agnostic_bbox_reg"):
        expand_box_predictor(state_dict, 4)
    assert expand_box_predictor(state_dict, 4, cls_agnostic_bbox_reg=False)[
        "module." + PREDICTOR + "bbox_pred.weight"].shape == (16, 8)
    assert expand_box_predictor(state_dict, 4, cls_agnostic_bbox_reg=True)[
        "module." + PREDICTOR + "bbox_pred.weight"].shape == (8, 8)


def test_shrinking_is_refused_with_the_key_and_the_sizes():
    with pytest.raises(ValueError, match=r"module\.roi_heads\.box\.predictor\.cls_score\.weight with 5 rows to 4"):
        expand_box_predictor(synthetic_state_dict(), 4)


def test_inconsistent_or_missing_predictor_tensors_are_errors():
    state_dict = synthetic_state_dict()
    state_dict["module." + PREDICTOR + "bbox_pred.weight"] = torch.zeros(12, 1024)
    with pytest.raises(ValueError, match=r"bbox_pred\.weight has 12 rows"):
        expand_box_predictor(state_dict, 9)
    with pytest.raises(KeyError, match=r"cls_score\.weight"):
        expand_box_predictor({"backbone.body.stem.conv1.weight": torch.zeros(1)}, 9)


def test_same_generator_seed_same_rows_and_same_size_is_a_copy():
    state_dict = synthetic_state_dict(dim=16)
    first, second = (expand_box_predictor(state_dict, 9, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert all(torch.equal(first[key], second[key]) for key in first)
    unchanged = expand_box_predictor(state_dict, 5)
    assert all(torch.equal(unchanged[key], state_dict[key]) for key in state_dict)


def test_the_cli_writes_only_the_expanded_model(tmp_path):
    old_model = build_model(OLD_CLASSES)
    state_dict = OrderedDict(("module." + key, value) for key, value in old_model.state_dict().items())
    source = tmp_path / "model_final.pth"
    torch.save({"model": state_dict, "optimizer": {"state": {}}, "scheduler": {"last_epoch": 8},
                "iteration": 8, "rng_states": [{"torch": torch.get_rng_state()}]}, source)
    target = tmp_path / "model_init.pth"

    check_ran(run_tool("lst_expand.py", ["--input", source, "--output", target, "--num-classes", NEW_CLASSES,
                                         "--seed", 4], tool_env()))

    checkpoint = load_checkpoint(target)
    assert set(checkpoint) == {"model"}
    expected = expand_box_predictor(state_dict, NEW_CLASSES, generator=torch.Generator().manual_seed(4))
    assert list(checkpoint["model"]) == list(expected)
    assert all(torch.equal(checkpoint["model"][key], expected[key]) for key in expected)
    new_model = build_model(NEW_CLASSES, seed=1)
    assert DetectronCheckpointer(default_cfg, new_model).load(str(target)) == {}
    torch.testing.assert_close(box_head_outputs(new_model)[0][:, :OLD_CLASSES], box_head_outputs(old_model)[0],
                               rtol=0, atol=1e-6)


def test_the_cli_reports_a_shrinking_request(tmp_path):
    source = tmp_path / "model.pth"
    torch.save({"model": synthetic_state_dict(dim=8)}, source)
    result = run_tool("lst_expand.py", ["--input", source, "--output", tmp_path / "out.pth", "--num-classes", 3],
                      tool_env())
    assert result.returncode != 0
    assert "cls_score.weight with 5 rows to 3 classes" in result.stderr
    assert not (tmp_path / "out.pth").exists()


def test_the_phase_config_sets_the_new_rows_spread(tmp_path):
    """--config-file: NUM_CLASSES and MODEL.LST.NEW_ROW_INIT_STD_CLS / _BBOX of the phase's config."""
    source = tmp_path / "model_final.pth"
    torch.save({"model": build_model(OLD_CLASSES).state_dict()}, source)
    spreads = {}
    for std_cls in (0.01, 0.5):
        config = tmp_path / "config_{}.yaml".format(std_cls)
        config.write_text("_BASE_: {}\nMODEL:\n  ROI_BOX_HEAD:\n    NUM_CLASSES: {}\n  LST:\n"
                          "    NEW_ROW_INIT_STD_CLS: {}\n    NEW_ROW_INIT_STD_BBOX: 0.2\n".format(
                              LST_CONFIG, NEW_CLASSES, std_cls))
        target = tmp_path / "model_init_{}.pth".format(std_cls)
        check_ran(run_tool("lst_expand.py", ["--input", source, "--output", target, "--config-file", config],
                           tool_env()))
        model = load_checkpoint(target)["model"]
        new_cls = model[PREDICTOR + "cls_score.weight"][OLD_CLASSES:]
        new_bbox = model[PREDICTOR + "bbox_pred.weight"][4 * OLD_CLASSES:]
        assert new_cls.shape[0] == NEW_CLASSES - OLD_CLASSES
        assert new_bbox.std().item() == pytest.approx(0.2, rel=0.1)
        spreads[std_cls] = new_cls.std().item()
    assert spreads[0.01] == pytest.approx(0.01, rel=0.1)
    assert spreads[0.5] == pytest.approx(0.5, rel=0.1)
