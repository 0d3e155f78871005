"""Episodic training of LST's meta weight generator inside an incremental phase (paper §3.4):
the seeded support sampler, scoring with replaced classifier rows (box head and Mask^X transfer),
gradient from the query loss into the generator and the support features, and an episodic phase
on the tiny CPU config: its files, the final rows as the mean of the generated ones, the final
checkpoint as an ordinary model, and exact resuming."""
import json
import os
import shutil
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fixtures_training import (
    REPO_ROOT,
    TEST_LST_CONFIGS,
    check_ran,
    load_checkpoint,
    max_weight_difference,
    run_tool,
    tool_env,
    seed_everything,
    train_net_module,
    write_random_phase1_experiment,
    write_seed_env_module,
)
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.lst.phase import ResolvedPhase, make_phase_data_loader
from maskrcnn_benchmark.lst.support_sampler import SupportSampler
from maskrcnn_benchmark.lst.support_sampler import class_images
from maskrcnn_benchmark.lst.episode import generate_support_weights, load_support_batch, support_roi_features, support_rois
from maskrcnn_benchmark.lst.episodic_trainer import (
    GENERATOR_CHECKPOINT_KEY,
    GENERATOR_FILE_NAME,
    build_episodic_weight_generator,
    check_episodic_training,
)
from maskrcnn_benchmark.lst.phase_config import phase_config
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.lst.distillation import attach_distillation, build_distillation_teacher
from maskrcnn_benchmark.modeling.roi_heads.box_head.roi_box_predictors import FPNCosinePredictor
from maskrcnn_benchmark.lst.weight_generator import build_weight_generator
from maskrcnn_benchmark.solver import make_optimizer
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask
from maskrcnn_benchmark.utils.checkpoint import Checkpointer
from maskrcnn_benchmark.utils.model_serialization import load_state_dict

LST_HEADS_CONFIG = os.path.join(REPO_ROOT, "configs", "tests", "e2e_mask_rcnn_R_18_FPN_tiny_cpu_lst_heads.yaml")
CLS_WEIGHT = "roi_heads.box.predictor.cls_score.weight"
NUM_OLD, NUM_CLASSES, BASE = 4, 7, 4  # the test experiment: C_0 of 4 classes, phase 1 adds 2
# A short episodic phase 1: 4 episodes of both new classes (the default), checkpoints every 2,
# final rows one image at a time.
MWG_OPTS = [
    "MODEL.FEW_SHOT.ENABLED", True,
    "SOLVER.MAX_ITER", 4,
    "SOLVER.STEPS", (3,),
    "SOLVER.CHECKPOINT_PERIOD", 2,
    "TEST.IMS_PER_BATCH", 1,
]


# ----------------------------------------------------------------------------- support sampler
CLASS_TO_IMAGES = {3: [10, 11, 12, 13, 14], 5: [20, 21, 22], 8: [30, 31, 32, 33, 34, 35, 36], 9: [40]}


def test_support_sampler_cycles_each_class_without_replacement_and_classes_round_robin():
    sampler = SupportSampler(CLASS_TO_IMAGES, classes_per_episode=3, seed=4)
    drawn = {label: [] for label in CLASS_TO_IMAGES}
    class_sequence = []
    for episode in range(40):
        pairs = sampler.episode(episode).pairs
        labels = [label for label, _ in pairs]
        assert len(set(labels)) == 3  # distinct classes within an episode
        class_sequence += labels
        for label, index in pairs:
            drawn[label].append(index)
    # Round robin: every window of 4 consecutive class draws holds each class once.
    for start in range(0, len(class_sequence), 4):
        assert sorted(class_sequence[start:start + 4]) == sorted(CLASS_TO_IMAGES)
    # Each class's images: successive blocks are permutations of its images (no repeat within a cycle).
    for label, images in drawn.items():
        size = len(CLASS_TO_IMAGES[label])
        blocks = [images[start:start + size] for start in range(0, len(images) - size + 1, size)]
        assert len(blocks) >= 3
        assert all(sorted(block) == CLASS_TO_IMAGES[label] for block in blocks)
    assert len({tuple(drawn[8][:7]), tuple(drawn[8][7:14]), tuple(drawn[8][14:21])}) > 1  # reshuffled per cycle


def test_support_sampler_is_a_function_of_seed_and_episode():
    uninterrupted = SupportSampler(CLASS_TO_IMAGES, 2, seed=7)
    sequence = [uninterrupted.episode(i) for i in range(25)]
    assert all(episode.labels == [label for label, _ in episode.pairs] and not episode.gathered
               for episode in sequence)
    resumed = SupportSampler(CLASS_TO_IMAGES, 2, seed=7)
    assert [resumed.episode(i) for i in (17, 3, 24)] == [sequence[17], sequence[3], sequence[24]]
    other_seed = SupportSampler(CLASS_TO_IMAGES, 2, seed=8)
    assert [other_seed.episode(i) for i in range(25)] != sequence


def test_support_sampler_processes_share_the_single_process_sequence():
    single = SupportSampler(CLASS_TO_IMAGES, 2, num_replicas=1, rank=0, seed=1)
    ranks = [SupportSampler(CLASS_TO_IMAGES, 2, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    for episode in range(10):
        assert ranks[0].episode(episode) == single.episode(2 * episode)
        assert ranks[1].episode(episode) == single.episode(2 * episode + 1)


def test_support_sampler_with_every_class_draws_all_of_them_each_episode_split_over_processes():
    single = SupportSampler(CLASS_TO_IMAGES, 0, num_replicas=1, rank=0, seed=3)
    ranks = [SupportSampler(CLASS_TO_IMAGES, 0, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    labels = sorted(CLASS_TO_IMAGES)
    drawn = {label: [] for label in labels}
    for episode_index in range(14):
        episode = single.episode(episode_index)
        assert episode.labels == labels and [label for label, _ in episode.pairs] == labels
        assert not episode.gathered
        for label, index in episode.pairs:
            drawn[label].append(index)
        shares = [sampler.episode(episode_index) for sampler in ranks]
        assert all(share.labels == labels and share.gathered for share in shares)
        # Process r holds positions r, r + 2, ... of the sorted classes, with the single process's images and seeds.
        for rank, share in enumerate(shares):
            assert share.pairs == episode.pairs[rank::2] and share.seeds == episode.seeds[rank::2]
    for label, images in drawn.items():  # each class's images cycle without replacement
        size = len(CLASS_TO_IMAGES[label])
        assert all(sorted(images[start:start + size]) == CLASS_TO_IMAGES[label]
                   for start in range(0, 14 - size + 1, size))
    assert len(set(single.episode(0).seeds) | set(single.episode(1).seeds)) == 2 * len(labels)


def test_support_sampler_final_pairs_and_errors():
    sampler = SupportSampler(CLASS_TO_IMAGES, 1, seed=0)
    pairs = sampler.all_pairs()
    assert sorted(pairs) == sorted((label, i) for label, images in CLASS_TO_IMAGES.items() for i in images)
    capped = Counter(label for label, _ in sampler.all_pairs(max_per_class=2))
    assert capped == {3: 2, 5: 2, 8: 2, 9: 1}
    with pytest.raises(ValueError, match="CLASSES_PER_EPISODE"):
        SupportSampler(CLASS_TO_IMAGES, 5)
    with pytest.raises(ValueError, match="CLASSES_PER_EPISODE"):
        SupportSampler(CLASS_TO_IMAGES, -1)
    with pytest.raises(ValueError, match="no image"):
        SupportSampler({1: [0], 2: []}, 1)


# ----------------------------------------------------------------------------- replaced rows
def lst_heads_cfg(*opts):
    cfg = default_cfg.clone()
    cfg.merge_from_file(LST_HEADS_CONFIG)
    cfg.merge_from_list(list(opts))
    return cfg


def test_predictor_scores_with_replaced_rows_inside_the_context_only():
    torch.manual_seed(0)
    predictor = FPNCosinePredictor(lst_heads_cfg(), 64)
    x = torch.randn(5, 64)
    labels, rows = [2, 5], torch.randn(2, 64, requires_grad=True)
    before = predictor(x)[0]
    with predictor.replaced_class_weights(labels, rows):
        inside = predictor(x)[0]
    after = predictor(x)[0]
    scale = predictor.scale_cls
    expected = scale * F.cosine_similarity(x[:, None, :], rows[None, :, :], dim=2)
    torch.testing.assert_close(inside[:, labels], expected)
    others = [j for j in range(NUM_CLASSES) if j not in labels]
    torch.testing.assert_close(inside[:, others], before[:, others])
    assert torch.equal(after, before)

    inside.sum().backward()
    assert rows.grad is not None and rows.grad.abs().sum() > 0
    classifier_grad = predictor.cls_score.weight.grad
    assert torch.all(classifier_grad[labels] == 0) and classifier_grad[others].abs().sum() > 0

    with pytest.raises(ValueError, match="repeat"):
        with predictor.replaced_class_weights([2, 2], torch.zeros(2, 64)):
            pass
    with pytest.raises(ValueError, match=r"\(K, 64\)"):
        with predictor.replaced_class_weights([2], torch.zeros(1, 63)):
            pass


def test_mask_transfer_sees_the_replaced_rows():
    torch.manual_seed(0)
    model = build_detection_model(lst_heads_cfg()).train()
    predictor = model.roi_heads.box.predictor
    captured = []
    model.roi_heads.bbox2mask.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    image = torch.randn(3, 128, 160)
    target = BoxList(torch.tensor([[10.0, 10.0, 70.0, 80.0], [80.0, 30.0, 150.0, 110.0]]), (160, 128))
    target.add_field("labels", torch.tensor([2, 5]))
    polygons = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in target.bbox.tolist()]
    target.add_field("masks", SegmentationMask(polygons, (160, 128)))
    rows = torch.randn(2, 64)
    with predictor.replaced_class_weights([2, 5], rows):
        model(to_image_list([image], 32), [target])
    model(to_image_list([image], 32), [target])
    inside, outside = captured
    assert torch.equal(inside[[2, 5]], rows)
    others = [0, 1, 3, 4, 6]
    assert torch.equal(inside[others], predictor.cls_score.weight[others])
    assert torch.equal(outside, predictor.cls_score.weight)


# ----------------------------------------------------------------------------- support RoIs
def test_support_rois_are_the_class_boxes_then_overlapping_proposals_best_first():
    size = (200, 150)
    boxes = [[10.0, 10.0, 60.0, 60.0], [100.0, 20.0, 180.0, 120.0], [0.0, 0.0, 30.0, 30.0]]
    target = BoxList(torch.tensor(boxes), size)
    target.add_field("labels", torch.tensor([4, 4, 2]))
    proposals = BoxList(torch.tensor([
        [12.0, 12.0, 58.0, 62.0],    # high overlap with box 0
        [100.0, 20.0, 150.0, 120.0],  # ~0.63 with box 1
        [0.0, 0.0, 28.0, 30.0],       # overlaps only the class-2 box
        [30.0, 30.0, 90.0, 90.0],     # low overlap
        [104.0, 24.0, 176.0, 116.0],  # high overlap with box 1
    ]), size)
    gt = target.bbox[:2]
    # Reference IoU: torchvision's, with the inclusive-pixel (+1) convention of the codebase.
    inclusive = lambda boxes: boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])  # noqa: E731
    best = torchvision.ops.box_iou(inclusive(proposals.bbox), inclusive(gt)).max(dim=1).values
    expected_order = [i for i in best.argsort(descending=True).tolist() if best[i] >= 0.5]
    assert len(expected_order) == 3

    rois = support_rois(target, 4, proposals, max_rois=10)
    torch.testing.assert_close(rois.bbox, torch.cat([gt, proposals.bbox[expected_order]]))
    capped = support_rois(target, 4, proposals, max_rois=3)
    torch.testing.assert_close(capped.bbox, torch.cat([gt, proposals.bbox[expected_order[:1]]]))
    assert torch.equal(support_rois(target, 4, proposals, 10, use_proposals=False).bbox, gt)
    assert len(support_rois(target, 6, proposals, 10)) == 0


# ----------------------------------------------------------------------------- phase set-up
@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """phases.json (C_0 = 4 classes, phase 1 = 2) on the LVIS fixture, a (random) theta_0 as
    phase_0/model_final.pth and its expansion as phase_1/model_init.pth."""
    out, catalog, fixture = write_random_phase1_experiment(tmp_path_factory.mktemp("mwg"), BASE, NUM_CLASSES)
    return {"out": out, "catalog": catalog, "fixture": fixture}


def mwg_cfg(experiment, output_dir, *opts):
    cfg = phase_config(TEST_LST_CONFIGS, str(experiment["out"]), 1,
                       ["PATHS_CATALOG", experiment["catalog"], *MWG_OPTS, *opts])
    cfg.defrost()
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg


def train_phase(cfg, seed=0):
    """tools/train_net.py's train() in this process, from generators seeded with ``seed``."""
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    seed_everything(seed)
    return train_net_module().train(cfg, 0, False, ResolvedPhase.from_config(cfg))


def phase_model(cfg):
    """The phase-1 student (expanded theta_0) with its teacher, an optimizer and the generator."""
    seed_everything(0)
    model = build_detection_model(cfg)
    load_state_dict(model, torch.load(cfg.MODEL.WEIGHT, weights_only=True)["model"])
    attach_distillation(model, build_distillation_teacher(cfg))
    optimizer = make_optimizer(cfg, model)
    generator = build_episodic_weight_generator(cfg, ResolvedPhase.from_config(cfg), model, optimizer)
    return model.train(), generator, optimizer


def test_class_images_match_the_annotations(experiment, tmp_path):
    cfg = mwg_cfg(experiment, tmp_path)
    dataset = make_phase_data_loader(cfg, is_train=True).dataset
    images = class_images(dataset, [5, 6])
    data = experiment["fixture"].data
    phases = json.loads((experiment["out"] / "phases.json").read_text())
    for label, category_id in zip((5, 6), phases["groups"][1]):
        image_ids = {a["image_id"] for a in data["annotations"] if a["category_id"] == category_id}
        assert sorted(dataset.get_img_info(i)["id"] for i in images[label]) == sorted(image_ids)


def test_mwg_configuration_errors(experiment, tmp_path):
    cfg0 = phase_config(TEST_LST_CONFIGS, str(experiment["out"]), 0,
                        ["PATHS_CATALOG", experiment["catalog"], "MODEL.FEW_SHOT.ENABLED", True])
    with pytest.raises(ValueError, match="incremental phases only"):
        check_episodic_training(cfg0, ResolvedPhase.from_config(cfg0), build_detection_model(cfg0))
    cfg = mwg_cfg(experiment, tmp_path, "MODEL.ROI_BOX_HEAD.PREDICTOR", "FPNPredictor",
                  "MODEL.ROI_MASK_HEAD.USE_BBOX2MASK", False, "MODEL.ROI_MASK_HEAD.USE_MLPMASK", False)
    with pytest.raises(ValueError, match="FPNCosinePredictor"):
        check_episodic_training(cfg, ResolvedPhase.from_config(cfg), build_detection_model(cfg))
    cfg = mwg_cfg(experiment, tmp_path, "MODEL.FEW_SHOT.GENERATOR_WEIGHT", str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="GENERATOR_WEIGHT"):
        phase_model(cfg)


def test_query_loss_reaches_the_generator_and_the_support_features(experiment, tmp_path):
    cfg = mwg_cfg(experiment, tmp_path)
    model, generator, _ = phase_model(cfg)
    data_loader = make_phase_data_loader(cfg, is_train=True)
    dataset = data_loader.dataset
    support_pairs = [(5, int(class_images(dataset, [5])[5][0])), (6, int(class_images(dataset, [6])[6][0]))]
    support_images, support_targets = load_support_batch(dataset, support_pairs, 32, torch.device("cpu"))
    query_images, query_targets, _ = next(iter(data_loader))

    support_features = []

    def keep_features(module, inputs, output):
        output.retain_grad()
        support_features.append(output)

    hook = model.roi_heads.box.feature_extractor.register_forward_hook(keep_features)
    kept, weights = generate_support_weights(model, generator, support_images, support_targets, [5, 6],
                                             cfg.MODEL.FEW_SHOT, BASE)
    hook.remove()
    assert kept == [0, 1] and weights.shape == (2, 64)
    with model.roi_heads.box.predictor.replaced_class_weights([5, 6], weights):
        losses = model(query_images, list(query_targets))
    assert "loss_distill" in losses and "loss_mask" in losses
    sum(losses.values()).backward()

    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert support_features[0].grad.abs().sum() > 0
    classifier_grad = model.roi_heads.box.predictor.cls_score.weight.grad
    # The replaced rows are not used, neither by the box classifier nor by the mask transfer.
    assert torch.all(classifier_grad[[5, 6]] == 0)
    assert classifier_grad[1:BASE + 1].abs().sum() > 0


def test_support_features_of_an_image_come_from_that_image_when_an_earlier_one_is_left_out(experiment, tmp_path):
    cfg = mwg_cfg(experiment, tmp_path, "MODEL.FEW_SHOT.SUPPORT_PROPOSALS", False)
    model, _, _ = phase_model(cfg)
    model.eval()
    dataset = make_phase_data_loader(cfg, is_train=True).dataset
    support_pairs = [(5, int(class_images(dataset, [5])[5][0])), (6, int(class_images(dataset, [6])[6][0]))]
    images, targets = load_support_batch(dataset, support_pairs, 32, torch.device("cpu"))
    with torch.no_grad():
        both_kept, both_counts, both_features = support_roi_features(model, images, targets, [5, 6], cfg.MODEL.FEW_SHOT)
        kept, counts, features = support_roi_features(model, images, targets, [NUM_CLASSES + 90, 6], cfg.MODEL.FEW_SHOT)
    assert both_kept == [0, 1] and kept == [1] and counts == both_counts[1:]
    torch.testing.assert_close(features, both_features[both_counts[0]:])


# ----------------------------------------------------------------------------- a whole phase
@pytest.fixture(scope="module")
def mwg_phase(experiment, tmp_path_factory):
    """An uninterrupted episodic phase 1 (4 episodes), trained in this process; every scored box is
    a detection (SCORE_THRESH 0), so that comparing predictions is never vacuous."""
    cfg = mwg_cfg(experiment, tmp_path_factory.mktemp("mwg_phase"), "MODEL.FEW_SHOT.SUPPORT_PROPOSALS", False,
                  "MODEL.ROI_HEADS.SCORE_THRESH", 0.0)
    model = train_phase(cfg)
    return cfg, model


def test_episodic_phase_writes_an_ordinary_model_and_the_generator(mwg_phase):
    cfg, _ = mwg_phase
    out = cfg.OUTPUT_DIR
    final = load_checkpoint(os.path.join(out, "model_final.pth"))
    plain_keys = set(build_detection_model(cfg).state_dict())
    assert set(final["model"]) == plain_keys
    assert GENERATOR_CHECKPOINT_KEY not in final and final["iteration"] == 4
    intermediate = load_checkpoint(os.path.join(out, "model_0000002.pth"))
    assert set(intermediate[GENERATOR_CHECKPOINT_KEY]) == set(build_weight_generator(cfg, BASE).state_dict())
    generator_state = torch.load(os.path.join(out, GENERATOR_FILE_NAME), weights_only=True)
    build_weight_generator(cfg, BASE).load_state_dict(generator_state)
    initial = torch.load(cfg.MODEL.WEIGHT, weights_only=True)["model"]
    # the generator trained: its state differs from the one of episode 2
    assert any(not torch.equal(generator_state[k], intermediate[GENERATOR_CHECKPOINT_KEY][k]) for k in generator_state)
    assert not torch.equal(final["model"][CLS_WEIGHT][5:], initial[CLS_WEIGHT][5:])


def check_final_rows_are_generated_means(cfg, experiment):
    """The new classes' rows of OUTPUT_DIR/model_final.pth equal the mean over the class's
    instances of the rows that OUTPUT_DIR/weight_generator.pth generates from each of the class's
    training images (test-time transforms, one image at a time, GT boxes of the class as support
    RoIs; an image's row counts once per instance of the class in it)."""
    out = cfg.OUTPUT_DIR
    model = build_detection_model(cfg).eval()
    Checkpointer(model).load(os.path.join(out, "model_final.pth"))
    generator = build_weight_generator(cfg, BASE).eval()
    generator.load_state_dict(torch.load(os.path.join(out, GENERATOR_FILE_NAME), weights_only=True))

    test_cfg = cfg.clone()
    test_cfg.defrost()
    test_cfg.DATASETS.TEST = cfg.DATASETS.TRAIN  # the training images, with test-time transforms
    dataset = make_phase_data_loader(test_cfg, is_train=False)[0].dataset
    phases = json.loads((experiment["out"] / "phases.json").read_text())
    classifier = model.roi_heads.box.predictor.cls_score.weight
    annotations = experiment["fixture"].data["annotations"]
    with torch.no_grad():
        for label, category_id in zip((5, 6), phases["groups"][1]):
            image_ids = {a["image_id"] for a in annotations if a["category_id"] == category_id}
            generated, instances = [], []
            for index in range(len(dataset)):
                if dataset.get_img_info(index)["id"] not in image_ids:
                    continue
                image, target, _ = dataset[index]
                features = model.backbone(to_image_list([image], 32).tensors)
                boxes = target.bbox[target.get_field("labels") == label]
                roi_features = model.roi_heads.box.feature_extractor(features, [BoxList(boxes, target.size)])
                groups = torch.zeros(len(boxes), dtype=torch.int64)
                generated.append(generator(roi_features, classifier[1:BASE + 1], groups)[0])
                instances.append(len(boxes))
            assert generated
            counts = torch.tensor(instances, dtype=torch.float32)
            expected = (torch.stack(generated) * counts[:, None]).sum(dim=0) / counts.sum()
            torch.testing.assert_close(classifier[label], expected, rtol=1e-5, atol=1e-6)


def test_final_rows_are_the_mean_of_the_rows_generated_from_every_support_image(mwg_phase, experiment):
    check_final_rows_are_generated_means(mwg_phase[0], experiment)


def test_final_checkpoint_predicts_as_the_trained_model_without_the_generator(mwg_phase):
    cfg, trained = mwg_phase
    plain_cfg = cfg.clone()
    plain_cfg.defrost()
    plain_cfg.MODEL.FEW_SHOT.ENABLED = False
    plain = build_detection_model(plain_cfg).eval()
    Checkpointer(plain).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    trained.eval()
    images, _, _ = next(iter(make_phase_data_loader(cfg, is_train=False)[0]))
    with torch.no_grad():
        expected, actual = trained(images), plain(images)
    assert sum(len(p) for p in expected) > 0
    for e, a in zip(expected, actual):
        assert torch.equal(e.bbox, a.bbox)
        for field in ("scores", "labels", "mask"):
            assert torch.equal(e.get_field(field), a.get_field(field))


def test_resumed_episodic_phase_ends_with_the_uninterrupted_weights(mwg_phase, experiment, tmp_path):
    cfg, _ = mwg_phase
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    # The state a run killed after episode 2 leaves behind: its checkpoint and the tag naming it.
    shutil.copy(os.path.join(cfg.OUTPUT_DIR, "model_0000002.pth"), resumed_dir)
    (resumed_dir / "last_checkpoint").write_text("model_0000002.pth")
    resumed_cfg = mwg_cfg(experiment, resumed_dir, "MODEL.FEW_SHOT.SUPPORT_PROPOSALS", False)
    # Other seeds: only the checkpoint's weights, generator and random states can give the same result.
    train_phase(resumed_cfg, seed=123)

    resumed = load_checkpoint(resumed_dir / "model_final.pth")
    uninterrupted = load_checkpoint(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    assert resumed["iteration"] == 4
    assert max_weight_difference(resumed["model"], uninterrupted["model"]) <= 1e-6
    resumed_generator = torch.load(resumed_dir / GENERATOR_FILE_NAME, weights_only=True)
    uninterrupted_generator = torch.load(os.path.join(cfg.OUTPUT_DIR, GENERATOR_FILE_NAME), weights_only=True)
    assert max_weight_difference(resumed_generator, uninterrupted_generator) <= 1e-6

    # Re-running the finished phase keeps its final rows (a fresh generator would write others).
    train_phase(resumed_cfg, seed=5)
    again = load_checkpoint(resumed_dir / "model_final.pth")
    assert torch.equal(again["model"][CLS_WEIGHT], resumed["model"][CLS_WEIGHT])


@pytest.mark.slow
@pytest.mark.parametrize("classes_per_episode", [0, 1])
def test_two_processes_train_an_episodic_phase(experiment, tmp_path, classes_per_episode):
    """torchrun with 2 CPU processes (gloo): the new classes split over the processes and their
    rows gathered (0, the default) or per-process support classes (1), gradients averaged outside
    DDP, the final rows reduced over the processes' shares of the support images."""
    cfg = mwg_cfg(experiment, tmp_path / "out", "MODEL.FEW_SHOT.SUPPORT_PROPOSALS", False,
                  "MODEL.FEW_SHOT.CLASSES_PER_EPISODE", classes_per_episode)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(cfg.dump())
    env = tool_env(write_seed_env_module(tmp_path), threads=1)
    check_ran(run_tool("train_net.py", ["--config-file", config_file, "--skip-test"], env, nproc=2, timeout=600))
    final = load_checkpoint(tmp_path / "out" / "model_final.pth")
    assert final["iteration"] == 4 and GENERATOR_CHECKPOINT_KEY not in final
    check_final_rows_are_generated_means(cfg, experiment)
