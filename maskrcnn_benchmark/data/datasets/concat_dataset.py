"""ConcatDataset: torch's ConcatDataset plus the per-image queries the data loader makes
without loading images (image records for aspect grouping, labels for the LST samplers)."""
import bisect

from torch.utils.data.dataset import ConcatDataset as _ConcatDataset


class ConcatDataset(_ConcatDataset):
    """Datasets one after another; index i of the whole maps to one index of one part."""

    def get_idxs(self, idx):
        """(dataset position, index inside that dataset) of global index ``idx``."""
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        sample_idx = idx if dataset_idx == 0 else idx - self.cumulative_sizes[dataset_idx - 1]
        return dataset_idx, sample_idx

    def get_img_info(self, idx):
        dataset_idx, sample_idx = self.get_idxs(idx)
        return self.datasets[dataset_idx].get_img_info(sample_idx)

    def get_category_labels(self, idx):
        dataset_idx, sample_idx = self.get_idxs(idx)
        return self.datasets[dataset_idx].get_category_labels(sample_idx)

    def get_category_instance_counts(self, idx):
        dataset_idx, sample_idx = self.get_idxs(idx)
        return self.datasets[dataset_idx].get_category_instance_counts(sample_idx)

    @property
    def categories(self):
        """category id -> name over all parts (written to labels.json)."""
        merged = {}
        for dataset in self.datasets:
            merged.update(getattr(dataset, "categories", {}))
        return merged
