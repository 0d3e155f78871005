"""LST's meta weight generator (paper §3.4, Eq. 3) and the per-class average of generated weights.

References are written per RoI with torch.nn.functional.cosine_similarity and softmax, i.e. the
paper's "generate a weight per RoI, then average over the RoIs of the class in the image"."""
import pytest
import torch
import torch.nn.functional as F

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.modeling import registry
from maskrcnn_benchmark.lst.weight_generator import (
    AttentionBasedGenerator,
    NovelWeightAccumulator,
    build_weight_generator,
)

FEAT_DIM = 16
NUM_BASE = 5


def make_generator(affine="elementwise", seed=0):
    torch.manual_seed(seed)
    return AttentionBasedGenerator(FEAT_DIM, NUM_BASE, scale_att=10.0, affine=affine)


def random_inputs(num_rois=7, seed=1):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_rois, FEAT_DIM, generator=generator)
    base_weights = torch.randn(NUM_BASE, FEAT_DIM, generator=generator)
    return features, base_weights


def perturb_affine(module):
    """Moves a, b (or fc_avg, fc_att) away from their init so that the tests can tell them apart."""
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            if name.startswith(("avg_weight", "att_weight", "fc_avg", "fc_att")):
                tensor.add_(0.3 * torch.randn_like(tensor))


def reference_weight(module, features, base_weights):
    """Eq. 3 per RoI, averaged over the RoIs, with each step written out."""
    scale = module.scale_att.item()
    per_roi = []
    for x in features:
        x_hat = x / x.norm()
        query = module.query_layer(x_hat)
        similarities = F.cosine_similarity(query.unsqueeze(0), module.keys, dim=1)  # (b,)
        m = torch.softmax(scale * similarities, dim=0)
        attended = sum(m[j] * base_weights[j] / base_weights[j].norm() for j in range(NUM_BASE))
        if module.affine == "elementwise":
            per_roi.append(module.avg_weight * x_hat + module.att_weight * attended)
        else:
            per_roi.append(module.fc_avg(x_hat) + module.fc_att(attended))
    return torch.stack(per_roi).mean(dim=0)


@pytest.mark.parametrize("affine", ["elementwise", "full"])
def test_output_has_one_row_per_group(affine):
    module = make_generator(affine)
    features, base_weights = random_inputs(num_rois=7)
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    assert module(features, base_weights, groups).shape == (3, FEAT_DIM)


def test_attention_rows_sum_to_one_and_match_cosine_softmax():
    module = make_generator()
    features, _ = random_inputs(num_rois=6)
    attention = module.attention(features)
    assert attention.shape == (6, NUM_BASE)
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(6))
    for i, x in enumerate(features):
        query = module.query_layer(x / x.norm())
        similarities = F.cosine_similarity(query.unsqueeze(0), module.keys, dim=1)
        torch.testing.assert_close(attention[i], torch.softmax(10.0 * similarities, dim=0))


@pytest.mark.parametrize("affine", ["elementwise", "full"])
def test_single_group_matches_per_roi_eq3_average(affine):
    module = make_generator(affine)
    perturb_affine(module)
    features, base_weights = random_inputs(num_rois=5)
    generated = module(features, base_weights, torch.zeros(5, dtype=torch.int64))
    torch.testing.assert_close(generated[0], reference_weight(module, features, base_weights))


def test_changing_base_weights_changes_generated_weight():
    module = make_generator()
    features, base_weights = random_inputs()
    groups = torch.zeros(len(features), dtype=torch.int64)
    before = module(features, base_weights, groups)
    after = module(features, base_weights + torch.randn_like(base_weights), groups)
    assert not torch.allclose(before, after, atol=1e-3)


def test_zero_attention_vector_leaves_scaled_feature_mean():
    module = make_generator()
    with torch.no_grad():
        module.att_weight.zero_()
        module.avg_weight.uniform_(0.5, 2.0)
    features, base_weights = random_inputs(num_rois=4)
    generated = module(features, base_weights, torch.zeros(4, dtype=torch.int64))
    feature_mean = F.normalize(features, dim=1).mean(dim=0)
    torch.testing.assert_close(generated[0], module.avg_weight * feature_mean)


@pytest.mark.parametrize("affine", ["elementwise", "full"])
def test_groups_at_once_equal_each_group_alone(affine):
    module = make_generator(affine)
    perturb_affine(module)
    features, base_weights = random_inputs(num_rois=9)
    groups = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 2])
    together = module(features, base_weights, groups)
    for group in range(3):
        members = features[groups == group]
        alone = module(members, base_weights, torch.zeros(len(members), dtype=torch.int64))
        torch.testing.assert_close(together[group], alone[0])


@pytest.mark.parametrize(
    "affine,names",
    [
        ("elementwise", ["keys", "query_layer.weight", "scale_att", "avg_weight", "att_weight"]),
        ("full", ["keys", "query_layer.weight", "scale_att", "fc_avg.weight", "fc_att.weight"]),
    ],
)
def test_query_loss_reaches_generator_parameters_and_base_weights(affine, names):
    module = make_generator(affine)
    features, base_weights = random_inputs(num_rois=6)
    base_weights.requires_grad_(True)
    generated = module(features, base_weights, torch.tensor([0, 0, 0, 1, 1, 1]))  # 2 novel classes
    classifier = F.normalize(torch.cat([base_weights, generated]), dim=1)
    query_features, _ = random_inputs(num_rois=8, seed=2)
    logits = 10.0 * F.normalize(query_features, dim=1).mm(classifier.t())
    labels = torch.tensor([5, 6, 5, 6, 0, 1, 5, 6])
    F.cross_entropy(logits, labels).backward()

    parameters = dict(module.named_parameters())
    for name in names:
        grad = parameters[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert base_weights.grad is not None and base_weights.grad.abs().sum() > 0


def test_full_affine_at_init_is_close_to_elementwise_at_init():
    elementwise = make_generator("elementwise", seed=0)
    full = make_generator("full", seed=1)
    full.query_layer.load_state_dict(elementwise.query_layer.state_dict())
    with torch.no_grad():
        full.keys.copy_(elementwise.keys)
    features, base_weights = random_inputs(num_rois=6)
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    torch.testing.assert_close(
        full(features, base_weights, groups),
        elementwise(features, base_weights, groups),
        atol=1e-2,
        rtol=0,
    )


def test_initialisation_follows_spec():
    torch.manual_seed(0)
    dim, num_base = 128, 64
    module = AttentionBasedGenerator(dim, num_base, scale_att=7.0, affine="full")
    for layer in (module.query_layer, module.fc_avg, module.fc_att):
        noise = layer.weight.detach() - torch.eye(dim)
        assert 0.0008 < noise.std().item() < 0.0012
        assert torch.count_nonzero(layer.bias) == 0
    assert abs(module.keys.std().item() - (2.0 / dim) ** 0.5) < 0.01
    assert module.scale_att.requires_grad and module.scale_att.item() == 7.0
    elementwise = AttentionBasedGenerator(dim, num_base)
    assert torch.equal(elementwise.avg_weight, torch.ones(dim))
    assert torch.equal(elementwise.att_weight, torch.ones(dim))


def test_bad_inputs_are_rejected_with_clear_messages():
    module = make_generator()
    features, base_weights = random_inputs(num_rois=4)
    groups = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="base_weights of shape"):
        module(features, base_weights[1:], groups)
    with pytest.raises(ValueError, match=r"groups \[1\] have no RoI"):
        module(features, base_weights, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="int64"):
        module(features, base_weights, groups.int())
    with pytest.raises(ValueError, match="support features of shape"):
        module(features[:, :8], base_weights, groups)
    with pytest.raises(ValueError, match="MODEL.FEW_SHOT.AFFINE"):
        AttentionBasedGenerator(FEAT_DIM, NUM_BASE, affine="diagonal")


def test_accumulator_mean_over_several_calls_and_resume():
    torch.manual_seed(0)
    calls = [
        (torch.tensor([0, 2]), torch.randn(2, FEAT_DIM)),
        (torch.tensor([2, 1, 2]), torch.randn(3, FEAT_DIM)),
        (torch.tensor([0]), torch.randn(1, FEAT_DIM)),
        (torch.tensor([1, 1]), torch.randn(2, FEAT_DIM, requires_grad=True)),
    ]
    accumulator = NovelWeightAccumulator(3, FEAT_DIM)
    for class_indices, weights in calls[:2]:
        accumulator.add(class_indices, weights)
    resumed = NovelWeightAccumulator(3, FEAT_DIM)
    resumed.load_state_dict(accumulator.state_dict())
    for class_indices, weights in calls[2:]:
        resumed.add(class_indices, weights)

    all_classes = torch.cat([c for c, _ in calls])
    all_weights = torch.cat([w.detach() for _, w in calls])
    expected = torch.stack([all_weights[all_classes == c].mean(dim=0) for c in range(3)])
    torch.testing.assert_close(resumed.mean(), expected)
    assert resumed.count.tolist() == [2, 3, 3]
    assert not resumed.weight_sum.requires_grad


def test_accumulator_weights_each_row_by_its_instances():
    """A row standing for n instances counts as n copies of it: the mean over instances."""
    torch.manual_seed(0)
    class_indices, weights, instances = torch.tensor([0, 0, 1, 0]), torch.randn(4, FEAT_DIM), torch.tensor([3, 1, 2, 2])
    accumulator = NovelWeightAccumulator(2, FEAT_DIM)
    accumulator.add(class_indices, weights, instances)
    copies = NovelWeightAccumulator(2, FEAT_DIM)
    copies.add(class_indices.repeat_interleave(instances), weights.repeat_interleave(instances, dim=0))
    torch.testing.assert_close(accumulator.mean(), copies.mean())
    assert accumulator.count.tolist() == [6, 2]
    with pytest.raises(ValueError, match="instances"):
        accumulator.add(torch.tensor([0]), torch.randn(1, FEAT_DIM), torch.tensor([0]))


def test_accumulator_names_classes_without_weights():
    accumulator = NovelWeightAccumulator(4, FEAT_DIM)
    accumulator.add(torch.tensor([1, 1]), torch.randn(2, FEAT_DIM))
    with pytest.raises(ValueError, match=r"novel classes \[0, 2, 3\].*never received"):
        accumulator.mean()
    with pytest.raises(ValueError, match=r"class indices \[4, 271\] are outside 0..3"):
        accumulator.add(torch.tensor([271, 4]), torch.randn(2, FEAT_DIM))


def test_build_from_config():
    cfg = default_cfg.clone()
    cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = FEAT_DIM
    cfg.MODEL.FEW_SHOT.AFFINE = "full"
    cfg.MODEL.FEW_SHOT.SCALE_ATT = 5.0
    module = build_weight_generator(cfg, NUM_BASE)
    assert registry.FEWSHOT_WEIGHT_GENERATOR["AttentionBasedGenerator"] is AttentionBasedGenerator
    assert isinstance(module, AttentionBasedGenerator)
    assert module.keys.shape == (NUM_BASE, FEAT_DIM)
    assert module.query_layer.weight.shape == (FEAT_DIM, FEAT_DIM)
    assert module.fc_avg.weight.shape == (FEAT_DIM, FEAT_DIM)
    assert module.scale_att.item() == 5.0

    cfg.MODEL.FEW_SHOT.GENERATOR_TYPE = "NoSuchGenerator"
    with pytest.raises(KeyError, match="AttentionBasedGenerator"):
        build_weight_generator(cfg, NUM_BASE)
