"""GroupedBatchSampler: batches whose images all share a group (e.g. an aspect-ratio bin)."""
import torch
from torch.utils.data.sampler import BatchSampler, Sampler


class GroupedBatchSampler(BatchSampler):
    """Wraps a sampler to yield batches of ``batch_size`` indices of one group each, in an
    order as close as possible to the sampler's.

    Upstream's semantics: the sampler's output is split by group, each group's indices (in
    sampler order) are cut into batches, and the batches are ordered by the sampler position
    of their first index. A group's last batch may be smaller; ``drop_uneven`` drops such
    batches. The sampler may repeat an index (repeat-factor and class-aware sampling): each
    occurrence is one sample, since grouping works on sampler positions. An item may also be a
    (dataset index, active label) pair (BalancedReplaySampler): its group is its index's, and
    the batches hold the pairs.

    Arguments:
        sampler (Sampler): base sampler.
        group_ids (list[int] or 1-D tensor): group of every dataset index.
        batch_size (int): size of mini-batch.
        drop_uneven (bool): drop the batches smaller than batch_size.
    """

    def __init__(self, sampler, group_ids, batch_size, drop_uneven=False):
        if not isinstance(sampler, Sampler):
            raise ValueError(
                "sampler should be an instance of torch.utils.data.Sampler, but got "
                "sampler={}".format(sampler)
            )
        self.sampler = sampler
        self.group_ids = torch.as_tensor(group_ids, dtype=torch.int64)
        if self.group_ids.dim() != 1:
            raise ValueError(
                "group_ids should be 1-D (one group per dataset index), got shape {}".format(
                    tuple(self.group_ids.shape)
                )
            )
        self.batch_size = batch_size
        self.drop_uneven = drop_uneven
        self.groups = torch.unique(self.group_ids).sort(0)[0]
        self._can_reuse_batches = False

    def _prepare_batches(self):
        items = list(self.sampler)
        sampled_ids = torch.as_tensor(
            [item[0] if isinstance(item, tuple) else item for item in items], dtype=torch.int64
        )
        group_of_position = self.group_ids[sampled_ids]
        batches = []  # (sampler position of the first item, items)
        for group in self.groups:
            positions = torch.nonzero(group_of_position == group).flatten()
            if positions.numel() == 0:  # no image of this group in the epoch (split would give one empty chunk)
                continue
            for chunk in positions.split(self.batch_size):
                batches.append((chunk[0].item(), [items[p] for p in chunk.tolist()]))
        batches.sort(key=lambda batch: batch[0])
        batches = [indices for _, indices in batches]
        if self.drop_uneven:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        return batches

    def __iter__(self):
        if self._can_reuse_batches:
            batches = self._batches
            self._can_reuse_batches = False
        else:
            batches = self._prepare_batches()
        self._batches = batches
        return iter(batches)

    def __len__(self):
        """Number of batches of the next pass (computed once and reused by that pass)."""
        if not hasattr(self, "_batches"):
            self._batches = self._prepare_batches()
            self._can_reuse_batches = True
        return len(self._batches)
