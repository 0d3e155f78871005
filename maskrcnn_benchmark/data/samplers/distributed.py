"""DistributedSampler (torch's, as upstream copied it) and the sharding rule shared by the
samplers: an epoch's index list is padded to a multiple of the number of processes by repeating
its beginning, and process r takes the r-th contiguous chunk."""
import math

import torch
from torch.utils.data.sampler import Sampler

from maskrcnn_benchmark.utils import comm


def resolve_replicas(num_replicas, rank):
    """(num_replicas, rank), taking missing values from torch.distributed (1 and 0 when no
    process group is initialised)."""
    if num_replicas is None:
        num_replicas = comm.get_world_size()
    if rank is None:
        rank = comm.get_rank()
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(
            "rank {} is not in [0, num_replicas = {})".format(rank, num_replicas)
        )
    return num_replicas, rank


def shard_indices(indices, num_replicas, rank):
    """This process's chunk of an epoch's ``indices`` (a list): every process gets
    ceil(len / num_replicas) entries, the list being padded with its own beginning."""
    num_samples = int(math.ceil(len(indices) / num_replicas))
    total_size = num_samples * num_replicas
    if indices:
        padding = total_size - len(indices)
        indices = indices + (indices * math.ceil(padding / len(indices)))[:padding]
    return indices[rank * num_samples:(rank + 1) * num_samples]


class DistributedSampler(Sampler):
    """Each process iterates over its own share of the dataset.

    With ``shuffle``, the epoch's order is torch.randperm seeded with ``seed + epoch`` (torch's
    rule; upstream's copy seeded with the epoch alone, i.e. seed 0). Call ``set_epoch`` before
    each pass for a new order. Without ``shuffle`` the order is 0..N-1.

    Arguments:
        dataset: anything with ``len``.
        num_replicas (int), rank (int): number of processes and this one's rank; default
            from torch.distributed.
        shuffle (bool), seed (int): see above.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0):
        self.dataset = dataset
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(math.ceil(len(dataset) / self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            indices = list(range(len(self.dataset)))
        return iter(shard_indices(indices, self.num_replicas, self.rank))

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        self.epoch = epoch
