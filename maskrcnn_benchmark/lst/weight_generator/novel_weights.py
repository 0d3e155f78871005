"""Final novel classifier rows: the mean of all weights generated for each novel class (paper §3.4,
"averaging the predicted weights of all the instances of class c in D_t"), each weight counted
once per instance it stands for."""
import torch
from torch import nn


class NovelWeightAccumulator(nn.Module):
    """Running per-class weighted sums and counts of generated weights (detached).

    The buffers ``weight_sum`` (num_novel, d), float64, and ``count`` (num_novel,), int64, are in
    the state dict, so an interrupted pass over the support set can resume from a checkpoint. In
    distributed runs, sum both buffers over the processes (all_reduce) before calling ``mean``.

    Args:
        num_novel (int): number of novel classes of the phase.
        feat_dim (int): d, width of a classifier row.
    """

    def __init__(self, num_novel, feat_dim):
        super(NovelWeightAccumulator, self).__init__()
        if num_novel < 1 or feat_dim < 1:
            raise ValueError(
                "NovelWeightAccumulator needs num_novel >= 1 and feat_dim >= 1, got num_novel={} "
                "and feat_dim={}".format(num_novel, feat_dim)
            )
        self.num_novel = num_novel
        self.feat_dim = feat_dim
        self.register_buffer("weight_sum", torch.zeros(num_novel, feat_dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(num_novel, dtype=torch.int64))

    def add(self, class_indices, weights, instances=None):
        """Accumulates generated weights.

        Args:
            class_indices (Tensor[G], int64): novel-class index of each weight, in
                0..num_novel-1 (contiguous label minus the number of old classes minus 1).
            weights (Tensor[G, d]): generated weights; detached before accumulation.
            instances (Tensor[G], int64, optional): how many instances each weight stands for
                (>= 1; e.g. the class's instances in the weight's image); default 1 each.
        """
        expected_shape = (class_indices.shape[0], self.feat_dim)
        if class_indices.dim() != 1 or tuple(weights.shape) != expected_shape:
            raise ValueError(
                "NovelWeightAccumulator.add expects class_indices (G,) and weights (G, {}), got {} "
                "and {}".format(self.feat_dim, tuple(class_indices.shape), tuple(weights.shape))
            )
        class_indices = class_indices.to(device=self.count.device, dtype=torch.int64)
        out_of_range = (class_indices < 0) | (class_indices >= self.num_novel)
        if bool(out_of_range.any()):
            raise ValueError(
                "NovelWeightAccumulator.add: class indices {} are outside 0..{}; pass the index of "
                "the class within the novel block, not its label".format(
                    sorted(set(class_indices[out_of_range].tolist())), self.num_novel - 1
                )
            )
        if instances is None:
            instances = torch.ones_like(class_indices)
        instances = torch.as_tensor(instances, dtype=torch.int64, device=self.count.device)
        if tuple(instances.shape) != tuple(class_indices.shape) or bool((instances < 1).any()):
            raise ValueError(
                "NovelWeightAccumulator.add expects instances (G,) of counts >= 1, got {}".format(instances.tolist()))
        values = weights.detach().to(device=self.weight_sum.device, dtype=torch.float64)
        self.weight_sum.index_add_(0, class_indices, values * instances.unsqueeze(1).to(torch.float64))
        self.count.index_add_(0, class_indices, instances)

    def mean(self):
        """Tensor[num_novel, d] (float32): each class's mean generated weight.

        Raises a ValueError naming the classes that never received a weight.
        """
        missing = torch.nonzero(self.count == 0).flatten().tolist()
        if missing:
            raise ValueError(
                "NovelWeightAccumulator.mean: novel classes {} (indices in 0..{}) never received a "
                "generated weight; run the generator over support images of every novel "
                "class".format(missing, self.num_novel - 1)
            )
        return (self.weight_sum / self.count.unsqueeze(1).to(torch.float64)).to(torch.float32)
