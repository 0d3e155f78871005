"""Matcher labels and thresholds, and BalancedPositiveNegativeSampler counts and determinism."""
import pytest
import torch
from torchvision.models.detection._utils import Matcher as TorchvisionMatcher

from maskrcnn_benchmark.modeling.balanced_positive_negative_sampler import (
    BalancedPositiveNegativeSampler,
)
from maskrcnn_benchmark.modeling.matcher import Matcher


def test_thresholds_give_match_between_and_below():
    # 2 ground-truth rows, 5 predictions.
    iou = torch.tensor(
        [
            [0.70, 0.69, 0.30, 0.29, 0.10],
            [0.10, 0.20, 0.25, 0.00, 0.80],
        ]
    )
    matches = Matcher(0.7, 0.3, allow_low_quality_matches=False)(iou)
    assert matches.dtype == torch.int64
    # >= high matches; [low, high) is -2; < low is -1.
    assert matches.tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BETWEEN_THRESHOLDS,
                                Matcher.BELOW_LOW_THRESHOLD, 1]


def test_equal_thresholds_have_no_between_band():
    iou = torch.tensor([[0.5, 0.49, 0.9]])
    assert Matcher(0.5, 0.5)(iou).tolist() == [0, -1, 0]


def test_low_quality_matches_include_ties_and_use_best_gt():
    iou = torch.tensor(
        [
            # gt 0's best IoU 0.4 is shared by predictions 0 and 2 (a tie).
            [0.40, 0.10, 0.40, 0.05],
            # gt 1's best prediction is 1 (0.35); prediction 3 (best 0.2) is no one's best.
            [0.10, 0.35, 0.30, 0.20],
        ]
    )
    without = Matcher(0.7, 0.3, allow_low_quality_matches=False)(iou)
    assert without.tolist() == [-2, -2, -2, -1]
    with_low_quality = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    # Predictions 0 and 2 (tie for gt 0) and 1 (best for gt 1: 0.35) regain their best gt;
    # prediction 3 is no one's best.
    assert with_low_quality.tolist() == [0, 1, 0, -1]


@pytest.mark.parametrize("allow_low_quality_matches", [False, True])
def test_matches_torchvision_matcher_on_random_iou(allow_low_quality_matches):
    generator = torch.Generator().manual_seed(0)
    # Quantised so that ties and exact threshold hits occur.
    iou = torch.randint(0, 21, (7, 300), generator=generator).float() / 20
    ours = Matcher(0.7, 0.3, allow_low_quality_matches)(iou.clone())
    reference = TorchvisionMatcher(0.7, 0.3, allow_low_quality_matches)(iou.clone())
    assert torch.equal(ours, reference)


def test_empty_matrices_raise_clear_errors():
    matcher = Matcher(0.7, 0.3)
    with pytest.raises(ValueError, match="No ground-truth boxes available for one of the images during training"):
        matcher(torch.zeros(0, 10))
    with pytest.raises(ValueError, match="No proposal boxes available for one of the images during training"):
        matcher(torch.zeros(3, 0))


def test_low_above_high_threshold_is_rejected():
    with pytest.raises(ValueError, match="low_threshold <= high_threshold"):
        Matcher(0.3, 0.7)


def _labels(num_pos, num_neg, num_ignored, generator):
    labels = torch.cat(
        [torch.ones(num_pos), torch.zeros(num_neg), -torch.ones(num_ignored)]
    )
    return labels[torch.randperm(len(labels), generator=generator)]


@pytest.mark.parametrize(
    "num_pos, num_neg, expected_pos, expected_neg",
    [
        (300, 1000, 128, 128),  # enough of both: exact fraction
        (20, 1000, 20, 236),  # few positives: negatives fill the batch
        (300, 50, 128, 50),  # few negatives: the batch stays short
        (0, 10, 0, 10),
    ],
)
def test_sampler_counts_and_fraction(num_pos, num_neg, expected_pos, expected_neg):
    generator = torch.Generator().manual_seed(0)
    labels = _labels(num_pos, num_neg, 40, generator)
    sampler = BalancedPositiveNegativeSampler(256, 0.5)
    pos_masks, neg_masks = sampler([labels, labels.clone()])
    assert len(pos_masks) == len(neg_masks) == 2
    for pos, neg in zip(pos_masks, neg_masks):
        assert pos.dtype == torch.bool and neg.dtype == torch.bool
        assert pos.shape == neg.shape == labels.shape
        assert int(pos.sum()) == expected_pos
        assert int(neg.sum()) == expected_neg
        assert (labels[pos] >= 1).all()
        assert (labels[neg] == 0).all()


def test_sampler_treats_class_labels_as_positives():
    labels = torch.tensor([0, 3, 0, 7, -1, 1, 0, 0])
    pos, neg = BalancedPositiveNegativeSampler(4, 0.25)([labels])
    assert int(pos[0].sum()) == 1 and labels[pos[0]].item() in (1, 3, 7)
    assert int(neg[0].sum()) == 3 and (labels[neg[0]] == 0).all()


def test_sampler_generator_makes_sampling_reproducible():
    labels = _labels(300, 1000, 40, torch.Generator().manual_seed(1))

    def sample(seed):
        sampler = BalancedPositiveNegativeSampler(256, 0.25, generator=torch.Generator().manual_seed(seed))
        return sampler([labels])

    first_pos, first_neg = sample(7)
    again_pos, again_neg = sample(7)
    other_pos, other_neg = sample(8)
    assert torch.equal(first_pos[0], again_pos[0]) and torch.equal(first_neg[0], again_neg[0])
    assert not (torch.equal(first_pos[0], other_pos[0]) and torch.equal(first_neg[0], other_neg[0]))
    assert int(first_pos[0].sum()) == 64 and int(first_neg[0].sum()) == 192


def test_sampler_rejects_fraction_outside_unit_interval():
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(256, 1.5)
