"""Datasets, transforms, samplers and data loaders."""
from .build import check_num_classes, make_data_loader

__all__ = ["check_num_classes", "make_data_loader"]
