"""IterationBasedBatchSampler: a fixed number of training iterations over repeated passes of a
batch sampler, resumable at any iteration."""
from torch.utils.data.sampler import BatchSampler


class IterationBasedBatchSampler(BatchSampler):
    """Re-iterates ``batch_sampler`` until ``num_iterations`` batches have been produced, and
    yields those of iterations start_iter, ..., num_iterations - 1.

    Before pass p (p = 0, 1, ...) it calls ``batch_sampler.sampler.set_epoch(p)`` when the
    sampler has it, so every pass is a new, seeded epoch. Resuming at ``start_iter`` replays the
    passes before it (computing their index batches, no data), so the batches yielded are
    exactly those an uninterrupted run yields at the same iterations, provided the sampler is
    deterministic given its epoch (all of ours are).

    Differences from upstream: upstream passes the iteration at which a pass starts to
    set_epoch (the pass index here, so that processes whose passes have different lengths
    still agree on each epoch's shuffle), and restarts a fresh pass at start_iter.
    """

    def __init__(self, batch_sampler, num_iterations, start_iter=0):
        self.batch_sampler = batch_sampler
        self.num_iterations = num_iterations
        self.start_iter = start_iter

    def __iter__(self):
        iteration = 0
        epoch = 0
        sampler = getattr(self.batch_sampler, "sampler", None)
        while iteration < self.num_iterations:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            batches_in_pass = 0
            for batch in self.batch_sampler:
                batches_in_pass += 1
                if iteration >= self.start_iter:
                    yield batch
                iteration += 1
                if iteration >= self.num_iterations:
                    return
            if batches_in_pass == 0:
                raise RuntimeError(
                    "The batch sampler produced no batch in pass {}: is the dataset empty?".format(
                        epoch
                    )
                )
            epoch += 1

    def __len__(self):
        return self.num_iterations
