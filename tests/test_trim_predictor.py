"""tools/trim_predictor.py: a COCO-style checkpoint loses its class-specific layers and then
initialises a model with another number of classes."""
import torch

from fixtures_training import REPO_ROOT, TINY_CONFIG, check_ran, run_tool, tool_env
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.utils.model_serialization import load_state_dict


def tiny_model(num_classes):
    cfg = default_cfg.clone()
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.NUM_CLASSES", num_classes])
    torch.manual_seed(num_classes)
    return build_detection_model(cfg)


def test_trimmed_checkpoint_initialises_a_model_with_other_classes(tmp_path):
    coco_like = tiny_model(81)
    source = tmp_path / "coco.pth"
    torch.save({"model": coco_like.state_dict(), "optimizer": {}, "iteration": 90000}, source)
    check_ran(run_tool("trim_predictor.py", ["--input", source, "--output", tmp_path / "trimmed.pth"], tool_env()))

    trimmed = torch.load(tmp_path / "trimmed.pth", weights_only=True)
    assert list(trimmed) == ["model"]
    removed = set(coco_like.state_dict()) - set(trimmed["model"])
    assert removed == {"roi_heads.box.predictor.cls_score.weight", "roi_heads.box.predictor.cls_score.bias",
                       "roi_heads.box.predictor.bbox_pred.weight", "roi_heads.box.predictor.bbox_pred.bias",
                       "roi_heads.mask.predictor.mask_fcn_logits.weight",
                       "roi_heads.mask.predictor.mask_fcn_logits.bias"}

    target = tiny_model(7)
    fresh_classifier = target.roi_heads.box.predictor.cls_score.weight.clone()
    load_state_dict(target, {**{k: v for k, v in target.state_dict().items() if k in removed},
                             **trimmed["model"]})
    body = "backbone.body.layer1.0.conv1.weight"
    assert torch.equal(target.state_dict()[body], coco_like.state_dict()[body])
    assert torch.equal(target.roi_heads.box.predictor.cls_score.weight, fresh_classifier)

    again = run_tool("trim_predictor.py", ["--input", tmp_path / "trimmed.pth", "--output", tmp_path / "x.pth"],
                     tool_env())
    assert again.returncode != 0 and "nothing to trim" in again.stderr
