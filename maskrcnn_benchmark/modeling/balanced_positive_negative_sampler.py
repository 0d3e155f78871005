"""Random sampling of a fixed-size training batch with a bounded fraction of positives."""
import torch


class BalancedPositiveNegativeSampler(object):
    """Samples up to ``batch_size_per_image`` elements per image, at most
    ``positive_fraction`` of them positive; negatives fill the rest when there are enough.

    Arguments:
        batch_size_per_image (int): number of elements to sample per image.
        positive_fraction (float): largest fraction of positives in the sample.
        generator (torch.Generator, optional): random source for reproducible sampling;
            None uses PyTorch's global RNG, as upstream.
    """

    def __init__(self, batch_size_per_image, positive_fraction, generator=None):
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(
                "positive_fraction should be in [0, 1], got {}".format(positive_fraction)
            )
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.generator = generator

    def _randperm(self, n, device):
        if self.generator is None:
            return torch.randperm(n, device=device)
        return torch.randperm(n, generator=self.generator, device=self.generator.device).to(device)

    def __call__(self, matched_idxs):
        """
        Arguments:
            matched_idxs (list[Tensor]): one (N_i,) tensor per image of labels: -1 ignored,
                0 negative, >= 1 positive.

        Returns:
            pos_idx (list[Tensor]): per image, a (N_i,) bool mask of the sampled positives.
            neg_idx (list[Tensor]): per image, a (N_i,) bool mask of the sampled negatives.
        """
        pos_idx = []
        neg_idx = []
        for matched_idxs_per_image in matched_idxs:
            positive = torch.nonzero(matched_idxs_per_image >= 1).squeeze(1)
            negative = torch.nonzero(matched_idxs_per_image == 0).squeeze(1)

            num_pos = int(self.batch_size_per_image * self.positive_fraction)
            num_pos = min(positive.numel(), num_pos)
            num_neg = self.batch_size_per_image - num_pos
            num_neg = min(negative.numel(), num_neg)

            sampled_pos = positive[self._randperm(positive.numel(), positive.device)[:num_pos]]
            sampled_neg = negative[self._randperm(negative.numel(), negative.device)[:num_neg]]

            pos_mask = torch.zeros_like(matched_idxs_per_image, dtype=torch.bool)
            neg_mask = torch.zeros_like(matched_idxs_per_image, dtype=torch.bool)
            pos_mask[sampled_pos] = True
            neg_mask[sampled_neg] = True
            pos_idx.append(pos_mask)
            neg_idx.append(neg_mask)
        return pos_idx, neg_idx
