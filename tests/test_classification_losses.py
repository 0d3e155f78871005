"""The box head's long-tail classification losses (federated, EQLv2, Seesaw) and their score
functions, against hand computations in plain Python (math, loops over RoIs and classes), their
running statistics after two updates, gradients through a box head, the two-process (gloo) EQLv2
statistics, the class image counts of the federated loss, two iterations of tools/train_net.py per
loss (statistics saved and reloaded with the model) and the configs of each method."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.config import merge_config_file
from maskrcnn_benchmark.data import class_image_counts
from maskrcnn_benchmark.data.datasets.lvis import LVISDataset
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.box_head.box_head import build_roi_box_head
from maskrcnn_benchmark.modeling.roi_heads.box_head.classification_losses import (
    EQLv2Loss,
    FederatedLoss,
    SeesawLoss,
    make_classification_loss,
)
from maskrcnn_benchmark.modeling.roi_heads.box_head.inference import PostProcessor
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.utils.model_serialization import load_state_dict

from fixtures_data import write_lvis_fixture
from fixtures_training import (
    load_checkpoint,
    seed_everything,
    tiny_cfg,
    train_net_module,
    write_fixture_catalog,
)

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _bce(z, y):
    """Binary cross-entropy of logit z against target y in {0, 1}."""
    p = _sigmoid(z)
    return -math.log(p) if y else -math.log(1.0 - p)


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


# --------------------------------------------------------------------------- federated loss

LOGITS_5 = [[0.3, -1.2, 0.8, 2.0, -0.4], [-0.7, 1.5, -0.2, 0.1, 0.9], [1.1, 0.4, -1.6, -0.3, 0.2]]


def test_federated_loss_is_bce_over_the_present_and_sampled_classes():
    # Labels 0 and 1 present; of the negatives only 2 and 4 have training images (3 has none), and
    # with room for 4 classes both are taken, so the loss covers classes {1, 2, 4}.
    loss_fn = FederatedLoss(5, num_sampled_classes=4, freq_weight_power=0.5)
    loss_fn.set_class_image_counts([0, 10, 4, 0, 9])
    labels = [0, 1, 1]
    loss = loss_fn(torch.tensor(LOGITS_5, requires_grad=True), torch.tensor(labels))
    expected = sum(
        _bce(LOGITS_5[r][j], labels[r] == j) for r in range(3) for j in (1, 2, 4)
    ) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_federated_negatives_are_drawn_by_image_count_to_the_power():
    # Present {0, 1}; one negative among 2 (4 images) and 4 (9 images): weights 2 and 3.
    loss_fn = FederatedLoss(5, num_sampled_classes=3, freq_weight_power=0.5)
    loss_fn.set_class_image_counts([0, 10, 4, 0, 9])
    torch.manual_seed(0)
    draws = [loss_fn.sample_classes(torch.tensor([0, 1, 1])).tolist() for _ in range(2000)]
    assert all(d[:2] == [0, 1] and len(d) == 3 and d[2] in (2, 4) for d in draws)
    assert sum(d[2] == 2 for d in draws) / len(draws) == pytest.approx(2 / 5, abs=0.04)
    # As many labels present as classes allowed: no negative is added.
    assert loss_fn.sample_classes(torch.tensor([0, 1, 3])).tolist() == [0, 1, 3]


def test_federated_loss_without_image_counts_is_a_clear_error():
    with pytest.raises(RuntimeError, match="set_class_image_counts"):
        FederatedLoss(5)(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        FederatedLoss(5).set_class_image_counts([1, 2, 3])


@pytest.mark.parametrize("loss,prior,expected_bias", [
    ("federated", 0.01, -math.log(99.0)), ("federated", 0.2, -math.log(4.0)), ("softmax", 0.01, 0.0),
    ("eqlv2", 0.01, 0.0)])
def test_only_the_federated_classifier_starts_at_its_prior_probability(loss, prior, expected_bias):
    config = default_cfg.clone()
    merge_config_file(config, os.path.join(CONFIG_ROOT, "synthetic", "e2e_mask_rcnn_R_18_FPN_cpu.yaml"))
    config.merge_from_list(["MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS", loss, "MODEL.ROI_BOX_HEAD.PRIOR_PROB", prior])
    box = build_detection_model(config).roi_heads.box
    bias = box.predictor.cls_score.bias
    assert torch.allclose(bias, torch.full_like(bias, expected_bias))
    if loss == "federated":  # a RoI's every foreground score is the prior, up to the small weights
        scores = box.classification_loss.scores(box.predictor.cls_score(torch.zeros(3, config.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM)))
        assert torch.allclose(scores[:, 1:], torch.full_like(scores[:, 1:], prior))
    assert torch.all(box.predictor.bbox_pred.bias == 0)


def test_federated_prior_probability_outside_0_1_is_refused():
    config = default_cfg.clone()
    merge_config_file(config, os.path.join(CONFIG_ROOT, "synthetic", "e2e_mask_rcnn_R_18_FPN_cpu_federated.yaml"))
    config.merge_from_list(["MODEL.ROI_BOX_HEAD.PRIOR_PROB", 1.0])
    with pytest.raises(ValueError, match="PRIOR_PROB must be in"):
        build_detection_model(config)


def test_federated_scores_are_sigmoids_without_background():
    scores = FederatedLoss(5).scores(torch.tensor(LOGITS_5))
    for r in range(3):
        assert scores[r, 0].item() == 0
        for j in range(1, 5):
            assert scores[r, j].item() == pytest.approx(_sigmoid(LOGITS_5[r][j]), rel=1e-6)


# --------------------------------------------------------------------------- EQLv2

EQL_BATCH_1 = ([[0.5, -0.3, 1.2, -2.0], [-1.0, 0.8, -0.6, 0.4], [0.2, -1.5, 0.3, 1.1]], [0, 1, 3])
EQL_BATCH_2 = ([[1.3, 0.1, -0.4, 0.6], [-0.2, -0.9, 1.4, -1.1]], [2, 0])


def _eql_reference(batches, gamma=12.0, mu=0.8, alpha=4.0):
    """Per batch the EQLv2 loss, and the (pos, neg) statistics of classes 1..C-1 after it."""
    num_classes = len(batches[0][0][0])
    pos, neg = [0.0] * num_classes, [0.0] * num_classes
    losses, statistics = [], []
    for index, (logits, labels) in enumerate(batches):
        pos_w, neg_w = [1.0] * num_classes, [1.0] * num_classes
        if index > 0:
            for j in range(1, num_classes):
                neg_w[j] = _sigmoid(gamma * (pos[j] / (neg[j] + 1e-10) - mu))
                pos_w[j] = 1 + alpha * (1 - neg_w[j])
        total = 0.0
        new_pos, new_neg = list(pos), list(neg)
        for row, label in zip(logits, labels):
            for j, z in enumerate(row):
                weight = pos_w[j] if label == j else neg_w[j]
                total += weight * _bce(z, label == j)
                if j > 0 and label == j:
                    new_pos[j] += weight * abs(_sigmoid(z) - 1)
                elif j > 0:
                    new_neg[j] += weight * _sigmoid(z)
        pos, neg = new_pos, new_neg
        losses.append(total / len(logits))
        statistics.append((pos[1:], neg[1:]))
    return losses, statistics


def test_eqlv2_loss_and_statistics_after_two_updates_match_a_hand_computation():
    loss_fn = EQLv2Loss(4)
    expected_losses, expected_statistics = _eql_reference([EQL_BATCH_1, EQL_BATCH_2])
    for (logits, labels), loss_expected, (pos, neg) in zip(
        (EQL_BATCH_1, EQL_BATCH_2), expected_losses, expected_statistics
    ):
        loss = loss_fn(torch.tensor(logits), torch.tensor(labels))
        assert loss.item() == pytest.approx(loss_expected, rel=1e-6)
        assert loss_fn.pos_grad.tolist() == pytest.approx(pos, rel=1e-6)
        assert loss_fn.neg_grad.tolist() == pytest.approx(neg, rel=1e-6)
    assert int(loss_fn.num_updates) == 2
    # The second batch was weighted: its loss differs from the plain sigmoid cross-entropy.
    plain = sum(_bce(z, l == j) for row, l in zip(*EQL_BATCH_2) for j, z in enumerate(row)) / 2
    assert expected_losses[1] != pytest.approx(plain, rel=1e-3)


def test_eqlv2_scores_multiply_by_the_category_agnostic_foreground_probability():
    logits = EQL_BATCH_1[0]
    scores = EQLv2Loss(4).scores(torch.tensor(logits))
    for r, row in enumerate(logits):
        assert scores[r, 0].item() == pytest.approx(_sigmoid(row[0]), rel=1e-6)
        for j in range(1, 4):
            expected = _sigmoid(row[j]) * (1 - _sigmoid(row[0]))
            assert scores[r, j].item() == pytest.approx(expected, rel=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eqlv2_worker(rank, world_size, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        loss_fn = EQLv2Loss(4)
        for logits, labels in (EQL_BATCH_1, EQL_BATCH_2):
            # Rank r takes the RoIs r, r + 2, ... of each batch.
            loss_fn(torch.tensor(logits[rank::world_size]), torch.tensor(labels[rank::world_size]))
        torch.save({k: v.clone() for k, v in loss_fn.state_dict().items()},
                   os.path.join(out_dir, "rank{}.pt".format(rank)))
    finally:
        dist.destroy_process_group()


def test_eqlv2_statistics_of_two_gloo_processes_equal_one_process_on_the_same_data(tmp_path):
    mp.spawn(_eqlv2_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = EQLv2Loss(4)
    for logits, labels in (EQL_BATCH_1, EQL_BATCH_2):
        single(torch.tensor(logits), torch.tensor(labels))
    for rank in range(2):
        state = torch.load(tmp_path / "rank{}.pt".format(rank), weights_only=True)
        torch.testing.assert_close(state["pos_grad"], single.pos_grad)
        torch.testing.assert_close(state["neg_grad"], single.neg_grad)
        assert int(state["num_updates"]) == 2


# --------------------------------------------------------------------------- Seesaw

# Columns: background objectness, classes 1..3, foreground objectness.
SEESAW_BATCH_1 = ([[0.4, 1.0, -0.5, 0.2, -0.1], [-0.3, 0.3, 1.7, -0.8, 0.6],
                   [0.9, -0.2, 0.1, 0.5, -0.4], [0.1, 2.2, 0.3, -1.0, 0.8]], [1, 2, 0, 1])
SEESAW_BATCH_2 = ([[0.2, -0.6, 0.4, 1.9, 0.5], [-0.5, 0.7, 1.2, 0.3, 0.1],
                   [0.6, 1.1, -0.3, 0.2, 0.0]], [3, 1, 0])


def _seesaw_reference(batches, p=0.8, q=2.0, eps=1e-2):
    """Per batch the seesaw loss and the cumulative label counts after it."""
    counts = [0] * 4
    losses, all_counts = [], []
    for logits, labels in batches:
        for label in labels:
            counts[label] += 1
        total = 0.0
        for row, label in zip(logits, labels):
            objectness = _softmax([row[0], row[4]])
            total += -math.log(objectness[1] if label > 0 else objectness[0])
            if label == 0:
                continue
            z = row[1:4]
            i = label - 1
            s = _softmax(z)
            denominator = math.exp(z[i])
            for j in range(3):
                if j == i:
                    continue
                n_i, n_j = max(counts[i + 1], 1), max(counts[j + 1], 1)
                mitigation = (n_j / n_i) ** p if n_j < n_i else 1.0
                ratio = s[j] / max(s[i], eps)
                compensation = ratio ** q if ratio > 1 else 1.0
                denominator += mitigation * compensation * math.exp(z[j])
            total += -math.log(math.exp(z[i]) / denominator)
        losses.append(total / len(logits))
        all_counts.append(list(counts))
    return losses, all_counts


def test_seesaw_loss_and_counts_after_two_updates_match_a_hand_computation():
    loss_fn = SeesawLoss(4)
    expected_losses, expected_counts = _seesaw_reference([SEESAW_BATCH_1, SEESAW_BATCH_2])
    for (logits, labels), loss_expected, counts in zip(
        (SEESAW_BATCH_1, SEESAW_BATCH_2), expected_losses, expected_counts
    ):
        loss = loss_fn(torch.tensor(logits), torch.tensor(labels))
        assert loss.item() == pytest.approx(loss_expected, rel=1e-6)
        assert loss_fn.cum_samples.tolist() == counts
    # Both factors act in the second batch: its RoI of class 1 gives class 2 a higher
    # probability than its own (compensation > 1), and class 3 has 1 instance against class 1's 3
    # (mitigation < 1).
    assert expected_counts[1] == [2, 3, 1, 1]
    factors = loss_fn.seesaw_factors(torch.tensor([SEESAW_BATCH_2[0][1][1:4]]), torch.tensor([0]))
    assert factors[0, 1] > 1 and factors[0, 2] < 1


def test_seesaw_mitigation_lowers_penalties_on_rarer_classes_only():
    loss_fn = SeesawLoss(4, p=0.8, q=0.0)
    loss_fn.cum_samples.copy_(torch.tensor([0.0, 100.0, 10.0, 1000.0]))
    factors = loss_fn.seesaw_factors(torch.zeros(3, 3), torch.tensor([0, 1, 2]))
    expected = [[1, 0.1 ** 0.8, 1], [1, 1, 1], [0.1 ** 0.8, 0.01 ** 0.8, 1]]
    torch.testing.assert_close(factors, torch.tensor(expected))


def test_seesaw_scores_are_class_softmax_times_objectness():
    logits = SEESAW_BATCH_1[0]
    scores = SeesawLoss(4).scores(torch.tensor(logits))
    assert scores.shape == (4, 4)
    for r, row in enumerate(logits):
        objectness = _softmax([row[0], row[4]])
        classes = _softmax(row[1:4])
        assert scores[r, 0].item() == pytest.approx(objectness[0], rel=1e-6)
        for j in range(3):
            assert scores[r, j + 1].item() == pytest.approx(classes[j] * objectness[1], rel=1e-6)


# --------------------------------------------------------------------------- box head

def _head_cfg(loss, *opts):
    cfg = default_cfg.clone()
    cfg.merge_from_list([
        "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPN2MLPFeatureExtractor",
        "MODEL.ROI_BOX_HEAD.PREDICTOR", "FPNPredictor",
        "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
        "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", 32,
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 6,
        "MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS", loss,
    ] + list(opts))
    return cfg


def _head_inputs(generator):
    proposals, targets = [], []
    for num_gt in (3, 2):
        wh = 30 + 50 * torch.rand(num_gt, 2, generator=generator)
        xy = 100 * torch.rand(num_gt, 2, generator=generator)
        gt = torch.cat([xy, xy + wh], dim=1)
        jittered = (gt.repeat(4, 1) + 4 * torch.randn(4 * num_gt, 4, generator=generator)).clamp(min=0)
        background = torch.tensor([[150.0, 100.0, 190.0, 140.0], [0.0, 130.0, 20.0, 149.0]])
        proposals.append(BoxList(torch.cat([jittered, gt, background]), (200, 150)))
        target = BoxList(gt, (200, 150))
        target.add_field("labels", torch.randint(1, 6, (num_gt,), generator=generator))
        targets.append(target)
    return proposals, targets


@pytest.mark.parametrize("loss,opts", [
    ("federated", []),
    ("eqlv2", []),
    ("seesaw", ["MODEL.ROI_BOX_HEAD.PREDICTOR", "FPNCosinePredictor",
                "MODEL.ROI_BOX_HEAD.COSINE_SCALE", 20.0, "MODEL.ROI_BOX_HEAD.COSINE_SCALE_LEARNABLE", False]),
])
def test_each_loss_trains_the_classifier_with_finite_gradients_and_scores_detections(loss, opts):
    torch.manual_seed(0)
    head = build_roi_box_head(_head_cfg(loss, *opts), 8).train()
    if loss == "federated":
        head.classification_loss.set_class_image_counts([0, 5, 4, 3, 2, 1])
    proposals, targets = _head_inputs(torch.Generator().manual_seed(3))
    features = [torch.randn(2, 8, 10, 13)]
    for _ in range(2):  # the second step uses the statistics of the first
        head.zero_grad()
        _, _, losses = head(features, proposals, targets)
        assert torch.isfinite(losses["loss_classifier"])
        losses["loss_classifier"].backward()
        grad = head.predictor.cls_score.weight.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert set(dict(head.named_buffers())) >= {
        "federated": {"classification_loss.class_image_counts"},
        "eqlv2": {"classification_loss.pos_grad", "classification_loss.neg_grad"},
        "seesaw": {"classification_loss.cum_samples"},
    }[loss]

    head.eval()
    with torch.no_grad():
        x = head.feature_extractor(features, proposals)
        logits, _ = head.predictor(x)
        _, detections, _ = head(features, proposals)
    probabilities = head.classification_loss.scores(logits)
    assert probabilities.shape == (len(x), 6)
    # Every detection's score is its RoI's probability under the loss's score function.
    first = probabilities[: len(proposals[0])]
    for score, label in zip(detections[0].get_field("scores"), detections[0].get_field("labels")):
        assert bool(((first[:, label] - score).abs() < 1e-6).any())


def test_post_processor_uses_the_score_function():
    boxes = [BoxList(torch.tensor([[0.0, 0.0, 9.0, 9.0]]), (50, 50))]
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    post_processor = PostProcessor(score_thresh=0.05, score_function=torch.sigmoid)
    (result,) = post_processor((logits, torch.zeros(1, 12)), boxes)
    assert result.get_field("labels").tolist() == [1, 2]
    assert result.get_field("scores").tolist() == pytest.approx([_sigmoid(2.0), _sigmoid(-1.0)])


def test_unknown_loss_and_lst_combinations_are_clear_errors():
    with pytest.raises(ValueError, match="CLASSIFICATION_LOSS is 'focal'"):
        make_classification_loss(_head_cfg("focal"))
    with pytest.raises(ValueError, match="DISTILL"):
        make_classification_loss(_head_cfg("eqlv2", "MODEL.LST.DISTILL.ENABLED", True))
    with pytest.raises(ValueError, match="USE_BBOX2MASK"):
        make_classification_loss(
            _head_cfg("seesaw", "MODEL.MASK_ON", True, "MODEL.ROI_MASK_HEAD.USE_BBOX2MASK", True))


# --------------------------------------------------------------------------- class image counts

def test_class_image_counts_equal_the_lvis_image_count_of_each_category(tmp_path):
    fixture = write_lvis_fixture(str(tmp_path), num_images=16, num_categories=6)
    dataset = LVISDataset(fixture.ann_file, fixture.root, True)
    counts = class_image_counts(dataset, 7)
    expected = torch.zeros(7)
    for category in fixture.data["categories"]:
        expected[dataset.json_category_id_to_contiguous_id[category["id"]]] = category["image_count"]
    assert counts.tolist() == expected.tolist()
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        class_image_counts(dataset, 4)


@pytest.mark.parametrize("loss", ["federated", "eqlv2", "seesaw"])
def test_train_net_trains_each_loss_and_saves_its_statistics(tmp_path, loss):
    catalog, fixture = write_fixture_catalog(tmp_path)
    cfg = tiny_cfg(catalog, tmp_path / "out", "MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS", loss,
                   "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 100)
    seed_everything(0)
    model = train_net_module().train(cfg, 0, False, None)
    buffers = {"classification_loss." + name: value
               for name, value in model.roi_heads.box.classification_loss.named_buffers()}
    saved = load_checkpoint(tmp_path / "out" / "model_final.pth")["model"]
    resumed = build_detection_model(cfg)
    load_state_dict(resumed, saved)  # as a resumed run loads them
    resumed_buffers = dict(resumed.roi_heads.box.named_buffers())
    for name, value in buffers.items():
        torch.testing.assert_close(saved["roi_heads.box." + name], value)
        torch.testing.assert_close(resumed_buffers[name], value)
    if loss == "federated":  # train_net set the training set's image counts
        dataset = LVISDataset(fixture.ann_file, fixture.root, True)
        torch.testing.assert_close(buffers["classification_loss.class_image_counts"],
                                   class_image_counts(dataset, 7))
    elif loss == "eqlv2":
        assert int(buffers["classification_loss.num_updates"]) == 2
        assert (buffers["classification_loss.neg_grad"] > 0).all()
    else:
        assert buffers["classification_loss.cum_samples"][1:].sum() > 0


# --------------------------------------------------------------------------- configs

METHOD_CONFIGS = {
    "federated": {"FED_LOSS_NUM_CLASSES": 50, "FED_LOSS_FREQ_WEIGHT_POWER": 0.5},
    "eqlv2": {"EQLV2_GAMMA": 12.0, "EQLV2_MU": 0.8, "EQLV2_ALPHA": 4.0},
    "seesaw": {"SEESAW_P": 0.8, "SEESAW_Q": 2.0, "PREDICTOR": "FPNCosinePredictor",
               "COSINE_SCALE": 20.0, "COSINE_SCALE_LEARNABLE": False},
}


@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
@pytest.mark.parametrize("path,num_classes,train", [
    ("synthetic/e2e_mask_rcnn_R_18_FPN_cpu_{}.yaml", 65, "synthetic_lt_train"),
    ("lvis/e2e_mask_rcnn_R_50_FPN_1x_lvis_v0.5_{}.yaml", 1231, "lvis_v0.5_train"),
    ("lvis/e2e_mask_rcnn_R_50_FPN_1x_lvis_v1_{}.yaml", 1204, "lvis_v1_train"),
])
def test_method_configs_merge_and_build_a_model(method, path, num_classes, train):
    config = default_cfg.clone()
    merge_config_file(config, os.path.join(CONFIG_ROOT, path.format(method)))
    config.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", ""])
    config.freeze()
    head = config.MODEL.ROI_BOX_HEAD
    assert head.CLASSIFICATION_LOSS == method and head.NUM_CLASSES == num_classes
    assert config.DATASETS.TRAIN == (train,)
    for key, value in METHOD_CONFIGS[method].items():
        assert head[key] == value
    box = build_detection_model(config).roi_heads.box
    width = num_classes + 1 if method == "seesaw" else num_classes
    assert box.predictor.cls_score.weight.shape[0] == width
    assert type(box.classification_loss).__name__ == {
        "federated": "FederatedLoss", "eqlv2": "EQLv2Loss", "seesaw": "SeesawLoss"}[method]
