"""Knowledge distillation of LST's incremental phases (paper §3.2 Eq. 2): the frozen
previous model theta_{t-1} scores the new-class GT boxes online, and loss_distill pulls the
student's unscaled old-class cosine logits towards the teacher's."""
import os
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from fixtures_training import check_ran, load_checkpoint, run_tool, tool_env, write_fixture_catalog
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.data.transforms.transforms import RandomHorizontalFlip
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.lst.distillation import (
    attach_distillation,
    build_distillation_teacher,
    distillation_loss,
)
from maskrcnn_benchmark.lst.expansion import expand_box_predictor
from maskrcnn_benchmark.solver import make_optimizer
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask
from maskrcnn_benchmark.utils.model_serialization import load_state_dict

LST_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "configs", "tests", "e2e_mask_rcnn_R_18_FPN_tiny_cpu_lst_heads.yaml",
)
NUM_OLD = 4  # foreground classes of theta_{t-1}; labels 5 and 6 are new
NUM_CLASSES = 7  # the student's, background included
HEIGHT, WIDTH = 128, 160


def make_cfg(teacher_weight="", *opts):
    cfg = default_cfg.clone()
    cfg.merge_from_file(LST_CONFIG)
    cfg.merge_from_list([
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", NUM_CLASSES,
        "MODEL.LST.NUM_OLD_CLASSES", NUM_OLD,
        "MODEL.LST.DISTILL.ENABLED", True,
        "MODEL.LST.DISTILL.TEACHER_WEIGHT", str(teacher_weight),
        *opts,
    ])
    return cfg


def build_model(cfg, num_classes, seed):
    cfg = cfg.clone()
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.NUM_CLASSES", num_classes])
    torch.manual_seed(seed)
    return build_detection_model(cfg)


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory):
    """theta_{t-1} (NUM_OLD + 1 classes) saved as a DDP checkpoint with optimizer entries."""
    path = tmp_path_factory.mktemp("teacher") / "model_final.pth"
    old_model = build_model(make_cfg(), NUM_OLD + 1, seed=0)
    state_dict = OrderedDict(("module." + key, value) for key, value in old_model.state_dict().items())
    torch.save({"model": state_dict, "optimizer": {}, "iteration": 10}, path)
    return path


def phase_models(old_checkpoint, *opts):
    """(student expanded from theta_{t-1} with the teacher attached, cfg)."""
    cfg = make_cfg(old_checkpoint, *opts)
    student = build_model(cfg, NUM_CLASSES, seed=1)
    old_state = torch.load(old_checkpoint, weights_only=True)["model"]
    load_state_dict(student, expand_box_predictor(old_state, NUM_CLASSES, generator=torch.Generator().manual_seed(0)))
    attach_distillation(student.to(cfg.MODEL.DEVICE), build_distillation_teacher(cfg))
    return student.train(), cfg


def teacher_of(student):
    """The teacher of the student's distillation loss hook."""
    (hook,) = student.loss_hooks
    return hook.teacher


def make_images(num_images=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, HEIGHT, WIDTH, generator=generator) for _ in range(num_images)]


def make_target(labels, boxes=((10.0, 10.0, 60.0, 70.0), (70.0, 20.0, 120.0, 90.0), (20.0, 60.0, 140.0, 120.0))):
    boxes = torch.tensor(boxes[: len(labels)])
    target = BoxList(boxes, (WIDTH, HEIGHT))
    target.add_field("labels", torch.tensor(labels))
    polygons = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes.tolist()]
    target.add_field("masks", SegmentationMask(polygons, (WIDTH, HEIGHT)))
    return target


def kd_loss(student, images, targets):
    """The student's loss_distill on ``images`` alone (no other head runs)."""
    images = to_image_list(images, 32)
    features = student.backbone(images.tensors)
    return teacher_of(student).compute_loss(images, features, targets, student.roi_heads.box)


def perturb_box_head(student, seed=5):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (student.roi_heads.box.feature_extractor.fc6, student.roi_heads.box.feature_extractor.fc7):
            layer.weight.add_(0.05 * torch.randn(layer.weight.shape, generator=generator))


def reference_old_logits(model_box_head, features, boxes):
    """Unscaled cosines with the old rows, written with F.cosine_similarity."""
    x = model_box_head.feature_extractor(features, boxes)
    rows = model_box_head.predictor.cls_score.weight[1 : NUM_OLD + 1]
    return F.cosine_similarity(x[:, None, :], rows[None, :, :], dim=2)


# Loss forms against hand computations


def test_both_loss_forms_on_given_logits():
    teacher = torch.tensor([[0.5, -0.2, 0.0], [0.1, 0.3, -0.4]])
    student = torch.tensor([[0.2, 0.2, 0.0], [0.1, 0.3, -0.4]])
    # Box 1 differs by (-0.3, 0.4, 0): distance 0.5, squared 0.25; box 2 not at all.
    torch.testing.assert_close(distillation_loss(teacher, student, "l2"), torch.tensor(0.25))
    torch.testing.assert_close(distillation_loss(teacher, student, "squared_sum"), torch.tensor(0.125))


def test_loss_forms_match_torch_reductions():
    generator = torch.Generator().manual_seed(0)
    teacher, student = (torch.rand(9, 30, generator=generator) * 2 - 1 for _ in range(2))
    torch.testing.assert_close(distillation_loss(teacher, student, "l2"),
                               F.pairwise_distance(student, teacher, eps=0).mean())
    # The authors' MSELoss(reduction="sum") / number of boxes.
    torch.testing.assert_close(distillation_loss(teacher, student, "squared_sum"),
                               torch.nn.MSELoss(reduction="sum")(student, teacher) / 9)


def test_an_unknown_loss_form_is_an_error(old_checkpoint):
    with pytest.raises(ValueError, match="MODEL.LST.DISTILL.LOSS"):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), "kl")
    with pytest.raises(ValueError, match="MODEL.LST.DISTILL.LOSS"):
        build_distillation_teacher(make_cfg(old_checkpoint, "MODEL.LST.DISTILL.LOSS", "kl"))


# The online teacher


@pytest.mark.parametrize("loss", ["l2", "squared_sum"])
def test_a_student_equal_to_the_teacher_gives_zero_and_a_perturbed_one_does_not(old_checkpoint, loss):
    student, _ = phase_models(old_checkpoint, "MODEL.LST.DISTILL.LOSS", loss)
    targets = [make_target([2, 5]), make_target([6, 1, 5])]
    assert kd_loss(student, make_images(), targets).item() == pytest.approx(0.0, abs=1e-6)
    perturb_box_head(student)
    assert kd_loss(student, make_images(), targets).item() > 1e-4


@pytest.mark.parametrize("loss, weight", [("l2", 1.0), ("squared_sum", 2.5)])
def test_the_loss_matches_a_hand_computation_on_the_two_models(old_checkpoint, loss, weight):
    student, _ = phase_models(old_checkpoint, "MODEL.LST.DISTILL.LOSS", loss, "MODEL.LST.DISTILL.WEIGHT", weight)
    perturb_box_head(student)
    teacher = teacher_of(student)
    images = to_image_list(make_images(), 32)
    targets = [make_target([2, 5]), make_target([6, 1, 5])]
    new_boxes = [BoxList(t.bbox[t.get_field("labels") > NUM_OLD], t.size) for t in targets]

    with torch.no_grad():
        y_old = reference_old_logits(teacher.roi_heads["box"], teacher.backbone(images.tensors), new_boxes)
        y_new = reference_old_logits(student.roi_heads.box, student.backbone(images.tensors), new_boxes)
        got = kd_loss(student, list(images.tensors), targets)
    assert y_old.shape == (3, NUM_OLD)
    difference = y_new - y_old
    if loss == "l2":
        expected = difference.pow(2).sum(dim=1).sqrt().mean()
    else:
        expected = difference.pow(2).sum() / 3
    torch.testing.assert_close(got, weight * expected, rtol=1e-4, atol=1e-6)


def test_only_images_with_new_class_boxes_reach_the_teacher(old_checkpoint):
    student, _ = phase_models(old_checkpoint)
    perturb_box_head(student)
    teacher_batches = []
    teacher_of(student).backbone.register_forward_hook(
        lambda module, inputs, output: teacher_batches.append(inputs[0].shape[0]))
    old_only, with_new = make_target([2, 3]), make_target([2, 5])
    images = make_images(3)

    mixed = kd_loss(student, images, [old_only, with_new, old_only])
    alone = kd_loss(student, images[1:2], [with_new])
    changed_others = kd_loss(student, [torch.zeros_like(images[0]), images[1], -images[2]],
                             [old_only, with_new, old_only])

    assert teacher_batches == [1, 1, 1]
    torch.testing.assert_close(mixed, alone, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(changed_others, alone, rtol=1e-5, atol=1e-7)


def test_a_batch_without_new_class_boxes_gives_a_connected_zero(old_checkpoint):
    student, _ = phase_models(old_checkpoint)
    calls = []
    teacher_of(student).backbone.register_forward_hook(lambda *args: calls.append(1))
    loss = kd_loss(student, make_images(), [make_target([2, 3]), make_target([1])])
    assert loss.item() == 0.0 and loss.requires_grad and calls == []
    loss.backward()
    assert torch.count_nonzero(student.roi_heads.box.predictor.cls_score.weight.grad) == 0


def test_gradients_reach_fc6_fc7_and_the_old_classifier_rows_only(old_checkpoint):
    student, _ = phase_models(old_checkpoint)
    perturb_box_head(student)
    kd_loss(student, make_images(), [make_target([2, 5]), make_target([6])]).backward()
    box_head = student.roi_heads.box
    assert box_head.feature_extractor.fc6.weight.grad.abs().sum() > 0
    assert box_head.feature_extractor.fc7.weight.grad.abs().sum() > 0
    row_grad = box_head.predictor.cls_score.weight.grad.abs().sum(dim=1)
    assert torch.all(row_grad[1 : NUM_OLD + 1] > 0)
    assert torch.all(row_grad[0] == 0) and torch.all(row_grad[NUM_OLD + 1 :] == 0)
    assert box_head.predictor.bbox_pred.weight.grad is None
    assert all(p.grad is None for p in teacher_of(student).parameters())


def test_a_horizontally_flipped_batch_is_seen_flipped_by_both_models(old_checkpoint):
    student, _ = phase_models(old_checkpoint)
    flip = RandomHorizontalFlip(prob=1.0)
    images, targets = make_images(), [make_target([2, 5]), make_target([6, 1])]
    flipped = [flip(image, target) for image, target in zip(images, targets)]
    flipped_images, flipped_targets = [f[0] for f in flipped], [f[1] for f in flipped]
    assert not torch.equal(flipped_targets[0].bbox, targets[0].bbox)

    assert kd_loss(student, flipped_images, flipped_targets).item() == pytest.approx(0.0, abs=1e-6)
    # Stored unflipped logits (what an offline table without its flipped copy would give) would not match.
    teacher = teacher_of(student)
    boxes = [BoxList(t.bbox[t.get_field("labels") > NUM_OLD], t.size) for t in targets]
    flipped_boxes = [BoxList(t.bbox[t.get_field("labels") > NUM_OLD], t.size) for t in flipped_targets]
    unflipped_logits = teacher(to_image_list(images, 32).tensors, boxes)
    flipped_logits = teacher(to_image_list(flipped_images, 32).tensors, flipped_boxes)
    assert (unflipped_logits - flipped_logits).abs().max() > 1e-3


# The teacher outside the student


def test_the_teacher_is_frozen_and_outside_the_student(old_checkpoint):
    student, cfg = phase_models(old_checkpoint)
    plain = build_model(cfg, NUM_CLASSES, seed=1)
    teacher = teacher_of(student)
    teacher_ids = {id(p) for p in teacher.parameters()}

    assert list(student.state_dict()) == list(plain.state_dict())
    assert not teacher_ids & {id(p) for p in student.parameters()}
    assert not teacher_ids & {id(t) for t in student.state_dict(keep_vars=True).values()}
    assert not any(module is teacher for module in student.modules())
    optimizer = make_optimizer(cfg, student)
    assert not teacher_ids & {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(p.requires_grad for p in teacher.parameters())
    student.train()
    assert not teacher.training


def test_the_teacher_has_the_old_models_weights(old_checkpoint):
    student, _ = phase_models(old_checkpoint)
    old_state = torch.load(old_checkpoint, weights_only=True)["model"]
    for key, value in teacher_of(student).state_dict().items():
        assert torch.equal(value, old_state["module." + key]), key
    assert teacher_of(student).roi_heads["box"]["predictor"].cls_score.weight.shape[0] == NUM_OLD + 1


def test_a_training_step_returns_loss_distill_and_updates_the_student(old_checkpoint):
    student, cfg = phase_models(old_checkpoint)
    perturb_box_head(student)
    optimizer = make_optimizer(cfg, student)
    teacher_before = {k: v.clone() for k, v in teacher_of(student).state_dict().items()}
    fc7_before = student.roi_heads.box.feature_extractor.fc7.weight.detach().clone()

    losses = student(to_image_list(make_images(), 32), [make_target([2, 5]), make_target([1, 3])])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                           "loss_rpn_box_reg", "loss_distill"}
    assert losses["loss_distill"].item() > 0
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()

    assert not torch.equal(student.roi_heads.box.feature_extractor.fc7.weight, fc7_before)
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher_of(student).state_dict().items())


def test_evaluation_ignores_the_teacher(old_checkpoint):
    student, _ = phase_models(old_checkpoint)
    calls = []
    teacher_of(student).backbone.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        student.eval()(to_image_list(make_images(), 32))
    assert calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_teacher_follows_the_student_to_the_gpu(old_checkpoint):
    student, _ = phase_models(old_checkpoint, "MODEL.DEVICE", "cuda")
    teacher = teacher_of(student)
    assert all(p.is_cuda for p in teacher.parameters())
    images = [image.cuda() for image in make_images()]
    targets = [make_target([2, 5]).to("cuda"), make_target([6]).to("cuda")]
    assert kd_loss(student, images, targets).item() == pytest.approx(0.0, abs=1e-5)


# Configuration errors


def test_enabled_without_a_teacher_weight_is_an_error():
    with pytest.raises(ValueError, match="MODEL.LST.DISTILL.TEACHER_WEIGHT"):
        build_distillation_teacher(make_cfg(""))


def test_a_missing_teacher_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="TEACHER_WEIGHT"):
        build_distillation_teacher(make_cfg(tmp_path / "absent.pth"))


def test_an_expanded_checkpoint_is_not_a_teacher(old_checkpoint, tmp_path):
    old_state = torch.load(old_checkpoint, weights_only=True)["model"]
    expanded = tmp_path / "model_init.pth"
    torch.save({"model": expand_box_predictor(old_state, NUM_CLASSES)}, expanded)
    with pytest.raises(ValueError, match=r"has 7 rows but MODEL.LST.NUM_OLD_CLASSES \+ 1 = 5"):
        build_distillation_teacher(make_cfg(expanded))


def test_distillation_needs_old_classes(old_checkpoint):
    with pytest.raises(ValueError, match="NUM_OLD_CLASSES"):
        build_distillation_teacher(make_cfg(old_checkpoint, "MODEL.LST.NUM_OLD_CLASSES", 0))


def test_distillation_needs_the_cosine_predictor(old_checkpoint, tmp_path):
    linear_opts = ["MODEL.ROI_BOX_HEAD.PREDICTOR", "FPNPredictor", "MODEL.ROI_MASK_HEAD.USE_BBOX2MASK", False,
                   "MODEL.ROI_MASK_HEAD.USE_MLPMASK", False]
    with pytest.raises(ValueError, match="FPNCosinePredictor"):
        build_distillation_teacher(make_cfg(old_checkpoint, *linear_opts))
    teacher = build_distillation_teacher(make_cfg(old_checkpoint))
    linear_student = build_model(make_cfg("", *linear_opts), NUM_CLASSES, seed=0)
    with pytest.raises(ValueError, match="FPNCosinePredictor"):
        attach_distillation(linear_student, teacher)


def test_the_authors_logits_file_key_points_to_the_teacher_weight(tmp_path):
    path = tmp_path / "authors.yaml"
    path.write_text("MODEL:\n  DISTILL_WEIGHTS_FILE: distill_logits_step1_160.json\n")
    with pytest.raises(KeyError, match=r"MODEL\.LST\.DISTILL\.TEACHER_WEIGHT.*online"):
        default_cfg.clone().merge_from_file(str(path))


# tools/train_net.py


@pytest.mark.slow
def test_train_net_attaches_the_teacher_and_logs_loss_distill(old_checkpoint, tmp_path):
    catalog, _ = write_fixture_catalog(tmp_path)
    old_state = torch.load(old_checkpoint, weights_only=True)["model"]
    initial = tmp_path / "model_init.pth"
    torch.save({"model": expand_box_predictor(old_state, NUM_CLASSES)}, initial)
    output_dir = tmp_path / "phase_1"
    result = run_tool("train_net.py", [
        "--config-file", LST_CONFIG, "--skip-test",
        "PATHS_CATALOG", catalog, "OUTPUT_DIR", output_dir,
        "MODEL.WEIGHT", initial,
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", NUM_CLASSES,
        "MODEL.LST.NUM_OLD_CLASSES", NUM_OLD,
        "MODEL.LST.DISTILL.ENABLED", "True",
        "MODEL.LST.DISTILL.TEACHER_WEIGHT", old_checkpoint,
        "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 2,
    ], tool_env(threads=1))
    check_ran(result)
    assert re.search(r"loss_distill: \d", result.stdout + result.stderr)
    saved = load_checkpoint(output_dir / "model_final.pth")["model"]
    assert list(saved) == list(build_model(make_cfg(), NUM_CLASSES, seed=0).state_dict())
