"""Samplers of dataset indices and batches."""
from .balanced_replay_sampler import BalancedReplaySampler
from .class_aware_sampler import ClassAwareSampler
from .distributed import DistributedSampler
from .grouped_batch_sampler import GroupedBatchSampler
from .iteration_based_batch_sampler import IterationBasedBatchSampler
from .repeat_factor_sampler import RepeatFactorSampler
from .support_sampler import SupportSampler

__all__ = [
    "BalancedReplaySampler",
    "ClassAwareSampler",
    "DistributedSampler",
    "GroupedBatchSampler",
    "IterationBasedBatchSampler",
    "RepeatFactorSampler",
    "SupportSampler",
]
