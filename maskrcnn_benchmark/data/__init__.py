"""Datasets, transforms, samplers and data loaders."""
from .build import check_num_classes, class_image_counts, make_data_loader

__all__ = ["check_num_classes", "class_image_counts", "make_data_loader"]
