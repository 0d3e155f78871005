"""Dataset classes named by DatasetCatalog factories."""
from .coco import COCODataset
from .concat_dataset import ConcatDataset
from .lvis import LVISDataset

__all__ = ["COCODataset", "ConcatDataset", "LVISDataset"]
