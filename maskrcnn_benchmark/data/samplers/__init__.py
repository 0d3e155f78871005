"""Samplers of dataset indices and batches."""
from .class_aware_sampler import ClassAwareSampler
from .distributed import DistributedSampler
from .grouped_batch_sampler import GroupedBatchSampler
from .iteration_based_batch_sampler import IterationBasedBatchSampler
from .repeat_factor_sampler import RepeatFactorSampler

__all__ = [
    "ClassAwareSampler",
    "DistributedSampler",
    "GroupedBatchSampler",
    "IterationBasedBatchSampler",
    "RepeatFactorSampler",
]
